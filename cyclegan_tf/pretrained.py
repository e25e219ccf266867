"""Importing the official PyTorch CycleGAN generators, without PyTorch and without running code.

This module owns the way from a `.pth` file of the official junyanz/pytorch-CycleGAN-and-pix2pix
code (e.g. its pretrained `horse2zebra.pth`) to a run directory that `inference.load_run`,
`sources.load` (translate, evaluate) and `exporting` use like a trained one:

1. `load_state_dict` reads a PyTorch `state_dict` file in either format PyTorch writes: the legacy
   stream (PyTorch < 1.6, all official files: a few header pickles, the state_dict pickle, then the
   raw storages) and the zip archive (PyTorch >= 1.6: `<top>/data.pkl` + `<top>/data/<key>`). A
   `.pth` is a pickle, and loading a pickle runs whatever callables it names; here an unpickler
   resolves only the handful of names a state_dict needs (`collections.OrderedDict`,
   `torch._utils._rebuild_tensor_v2`, the typed storage classes) to local stand-ins that build
   numpy arrays, and refuses every other name before anything is called.
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
import math
import os
import pickle
import re
import shutil
import struct
import uuid
import zipfile
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, generators, rundir, version
from cyclegan_tf import config as config_lib

# The directions and their checkpoint object names: a run directory's (`rundir`).
DIRECTIONS = rundir.DIRECTIONS
GENERATOR_NAMES = rundir.GENERATOR_NAMES

# The legacy format's first two pickles (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


class PretrainedError(errors.UserError):
    """A PyTorch file that cannot (or must not) be imported, or generators that cannot start a run
    (`init_generators`); the message says which and why."""


# -- reading state_dict files ----------------------------------------------------------------


class _StorageType:
    """Stands in for `torch.FloatStorage` & co., which a state_dict names only as dtype tags."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = dtype

    def __call__(self, *args, **kwargs):
        raise _Refused(f"it calls {self.name}, which a state_dict never does")

    def __setstate__(self, state):
        raise _Refused(f"it sets the state of {self.name}, which a state_dict never does")


# numpy has no bfloat16: its storages are read as uint16 and widened to float32.
_STORAGE_TYPES = {
    f"torch.{name}Storage": _StorageType(f"torch.{name}Storage", dtype)
    for name, dtype in (
        ("Float", "<f4"),
        ("Double", "<f8"),
        ("Half", "<f2"),
        ("BFloat16", "bfloat16"),
        ("Long", "<i8"),
        ("Int", "<i4"),
        ("Short", "<i2"),
        ("Char", "i1"),
        ("Byte", "u1"),
        ("Bool", "?"),
    )
}


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


class _Storage:
    """A storage the pickle references by persistent id; its bytes are attached later."""

    __slots__ = ("dtype", "key", "numel", "offset", "data")

    def __init__(self, dtype: str, key: str, numel: int, offset: int = 0):
        self.dtype = dtype
        self.key = key
        self.numel = numel
        self.offset = offset  # elements into the root storage (legacy storage views)
        self.data: np.ndarray | None = None  # the root storage's elements, once read

    def __setstate__(self, state):
        raise _Refused("it sets the state of a storage, which a state_dict never does")


class _Tensor:
    """A tensor as `_rebuild_tensor_v2` describes it; `to_numpy` reads it once storages are in."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def __setstate__(self, state):
        raise _Refused("it sets the state of a tensor, which a state_dict never does")

    def to_numpy(self) -> np.ndarray:
        storage = self.storage
        if storage.data is None:
            raise _Corrupt(f"storage {storage.key!r} has no data")
        start = storage.offset + self.offset
        # Bounds first: as_strided reads whatever memory the strides point at.
        count = math.prod(self.size)  # exact: no int64 overflow to slip past the checks
        last = start + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if count and (start < 0 or last >= storage.numel + storage.offset or count > storage.numel):
            raise _Corrupt(
                f"a tensor of shape {list(self.size)} reads past its storage {storage.key!r}"
            )
        flat = storage.data
        if not count:
            array = np.zeros(self.size, flat.dtype)
        else:
            base = flat[start:]
            array = np.lib.stride_tricks.as_strided(
                base, self.size, [s * flat.itemsize for s in self.stride], writeable=False
            ).copy()
        if storage.dtype == "bfloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


class _StateDict(collections.OrderedDict):
    """`collections.OrderedDict` for the unpickler: the `_metadata` state it gets is dropped."""

    def __setstate__(self, state):
        # PyTorch keeps per-module version numbers in `_metadata`; they mean nothing here, and
        # accepting no other attribute keeps BUILD from touching anything.
        pass


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value) -> bool:
    return isinstance(value, tuple) and all(_int(v) and v >= 0 for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _Tensor:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`."""
    if not (
        isinstance(storage, _Storage)
        and _int(storage_offset)
        and storage_offset >= 0
        and _int_tuple(size)
        and _int_tuple(stride)
        and len(size) == len(stride)
    ):
        raise _Corrupt("a tensor is described with arguments PyTorch never writes")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused) -> _Tensor:
    """`torch._utils._rebuild_parameter`: an `nn.Parameter` (a state_dict saved with keep_vars)."""
    if not isinstance(data, _Tensor):
        raise _Corrupt("a parameter wraps something other than a tensor")
    return data


class _Global:
    """An allow-listed global: calls `fn`, refuses to have its state set."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable):
        self.name = name
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        raise _Refused(f"it sets the state of {self.name}, which a state_dict never does")


_GLOBALS: dict[str, object] = {
    "collections.OrderedDict": _Global("collections.OrderedDict", _StateDict),
    "torch._utils._rebuild_tensor_v2": _Global("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    "torch._utils._rebuild_parameter": _Global(
        "torch._utils._rebuild_parameter", _rebuild_parameter
    ),
    **_STORAGE_TYPES,
}


class _Refused(Exception):
    """Raised inside unpickling for a name or call a state_dict never needs."""


class _Corrupt(Exception):
    """Raised inside reading for data that no PyTorch version writes."""


class _Unpickler(pickle.Unpickler):
    """Resolves only `_GLOBALS`; storages by persistent id through `storage_for`."""

    def __init__(self, file, storage_for: Callable | None = None):
        super().__init__(file)
        self._storage_for = storage_for

    def find_class(self, module: str, name: str):
        target = _GLOBALS.get(f"{module}.{name}")
        if target is None:
            raise _Refused(f"it references {module}.{name}, which a state_dict never needs")
        return target

    def persistent_load(self, pid):
        if self._storage_for is None or not (isinstance(pid, tuple) and pid[:1] == ("storage",)):
            raise _Corrupt("an object is referenced by an id PyTorch never writes")
        return self._storage_for(pid)


def _check_pid(pid: tuple, length: int) -> tuple[_StorageType, str, int]:
    """(storage type, key, element count) of a ('storage', type, key, location, numel, ...) id."""
    if not (
        len(pid) == length
        and isinstance(pid[1], _StorageType)
        and isinstance(pid[2], str)
        and re.fullmatch(r"[\w.-]{1,64}", pid[2])
        and _int(pid[4])
        and pid[4] >= 0
    ):
        raise _Corrupt(f"a storage is referenced as {pid!r:.100}")
    return pid[1], pid[2], pid[4]


def _read_legacy(data: bytes) -> dict:
    """The pre-1.6 stream: magic, protocol, sys_info, the object, storage keys, raw storages."""
    f = io.BytesIO(data)
    if _Unpickler(f).load() != _LEGACY_MAGIC:
        raise _Corrupt("wrong magic number")
    if _Unpickler(f).load() != _LEGACY_PROTOCOL:
        raise _Corrupt("unknown legacy protocol version")
    sys_info = _Unpickler(f).load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise _Corrupt("saved on a big-endian machine or without system info")

    roots: dict[str, _Storage] = {}

    def storage_for(pid):
        storage_type, key, numel = _check_pid(pid, 6)
        root = roots.setdefault(key, _Storage(storage_type.dtype, key, numel))
        if root.dtype != storage_type.dtype or root.numel != numel:
            raise _Corrupt(f"storage {key!r} is referenced with two types or sizes")
        view = pid[5]
        if view is None:
            return root
        # PyTorch < 1.0 could save views of a storage: (view key, offset, size).
        if not (isinstance(view, tuple) and len(view) == 3 and _int(view[1]) and _int(view[2])):
            raise _Corrupt(f"storage view {view!r:.100}")
        if view[1] < 0 or view[2] < 0 or view[1] + view[2] > numel:
            raise _Corrupt(f"a view of storage {key!r} reaches past its end")
        shared = _Storage(root.dtype, key, view[2], view[1])
        shared.data = root  # resolved to the root's elements below
        return shared

    state_dict = _Unpickler(f, storage_for).load()
    keys = _Unpickler(f).load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise _Corrupt("the storage key list is malformed")
    for key in keys:
        if key not in roots:
            raise _Corrupt(f"storage {key!r} is not used by any tensor")
        root = roots[key]
        header = f.read(8)
        if len(header) < 8:
            raise _Corrupt("the file is truncated")
        (numel,) = struct.unpack("<q", header)
        if numel != root.numel:
            raise _Corrupt(f"storage {key!r} holds {numel} elements, not {root.numel}")
        root.data = _frombuffer(f.read(numel * _itemsize(root.dtype)), root, numel)
    _resolve_views(state_dict)
    return state_dict


def _read_zip(data: bytes) -> dict:
    """The >= 1.6 archive: `<top>/data.pkl` and one raw file per storage in `<top>/data/`."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _Corrupt("a zip archive without exactly one <top>/data.pkl")
        top = pickles[0][: -len("/data.pkl")]

        def read(name: str) -> bytes:
            # torch.save stores members uncompressed; refusing compressed ones bounds every read
            # by the file's size (no zip bombs).
            if archive.getinfo(name).compress_type != zipfile.ZIP_STORED:
                raise _Corrupt(f"{name} is compressed, which torch.save never does")
            return archive.read(name)

        order = read(f"{top}/byteorder") if f"{top}/byteorder" in names else b"little"
        if order.strip() != b"little":
            raise _Corrupt("saved on a big-endian machine")
        storages: dict[str, _Storage] = {}

        def storage_for(pid):
            storage_type, key, numel = _check_pid(pid, 5)
            if key in storages:
                storage = storages[key]
                if storage.dtype != storage_type.dtype or storage.numel != numel:
                    raise _Corrupt(f"storage {key!r} is referenced with two types or sizes")
                return storage
            name = f"{top}/data/{key}"
            nbytes = numel * _itemsize(storage_type.dtype)
            if name not in names or archive.getinfo(name).file_size != nbytes:
                raise _Corrupt(f"{name} is missing or not {nbytes} bytes long")
            storage = _Storage(storage_type.dtype, key, numel)
            storage.data = _frombuffer(read(name), storage, numel)
            storages[key] = storage
            return storage

        return _Unpickler(io.BytesIO(read(pickles[0])), storage_for).load()


def _frombuffer(buffer: bytes, storage: _Storage, numel: int) -> np.ndarray:
    if len(buffer) != numel * _itemsize(storage.dtype):
        raise _Corrupt("the file is truncated")
    dtype = "<u2" if storage.dtype == "bfloat16" else storage.dtype
    return np.frombuffer(buffer, dtype=dtype, count=numel)


def _resolve_views(state_dict) -> None:
    if isinstance(state_dict, Mapping):
        for value in state_dict.values():
            storage = getattr(value, "storage", None)
            if isinstance(storage, _Storage) and isinstance(storage.data, _Storage):
                storage.data = storage.data.data


def _read(path: str) -> tuple[dict[str, np.ndarray], str, str]:
    """(state_dict, format, sha256) of a file; see `load_state_dict`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PretrainedError(f"cannot read {path}: {e.strerror or e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(_ZIP_MAGIC):
        kind, reader = "zip", _read_zip
    elif data.startswith(b"\x80\x02\x8a\x0a"):  # PROTO 2, LONG1 of 10 bytes: the magic number
        kind, reader = "legacy", _read_legacy
    else:
        raise PretrainedError(
            f"{path} is not a PyTorch state_dict file (neither the legacy format nor a zip "
            "archive); pass a .pth file saved by torch.save."
        )
    try:
        loaded = reader(data)
        if not isinstance(loaded, dict):
            raise _Corrupt(f"it holds a {type(loaded).__name__}, not a state_dict")
        state_dict = {}
        for key, value in loaded.items():
            if not isinstance(key, str) or not isinstance(value, _Tensor):
                raise _Corrupt(
                    f"entry {key!r:.60} is not a tensor: not a state_dict (a checkpoint that "
                    "wraps one? save `net.state_dict()` alone)"
                )
            state_dict[key] = value.to_numpy()
    except _Refused as e:
        raise PretrainedError(f"refusing to load {path}: {e}; the file may be malicious") from None
    except _Corrupt as e:
        raise PretrainedError(f"cannot load {path} ({kind} format): {e}") from None
    except Exception as e:  # anything the pickle VM or zipfile raises on malformed input
        raise PretrainedError(
            f"cannot load {path} ({kind} format): {type(e).__name__}: {_first_line(e)}"
        ) from None
    return state_dict, kind, digest


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch `state_dict` file without PyTorch and without running code from it.

    Both formats `torch.save` writes are read: the legacy stream of PyTorch < 1.6 (every official
    CycleGAN file) and the zip archive of later versions. Only the names a state_dict needs are
    resolved; any other name in the pickle (e.g. `posix.system`) stops the load before anything
    is called.

    Args:
      path: a `.pth` file holding a state_dict, e.g. the official `horse2zebra.pth`.

    Returns:
      The state_dict in file order: key (e.g. `model.1.weight`) -> numpy array in PyTorch's
      layout (Conv2d weights `[out, in, kh, kw]`); float32 for float32 tensors (bfloat16 ones are
      widened to float32), int64 for `num_batches_tracked`, ...

    Raises:
      PretrainedError: the file is unreadable, not a state_dict, corrupt, or references anything
        a state_dict never needs (the message names it).
    """
    return _read(path)[0]


# -- layouts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """The generator a state_dict holds, in `generators.build_generator` terms.

    Attributes:
      generator: resnet_9blocks | resnet_6blocks | unet_256 | unet_128.
      ngf: filters of the first conv.
      dropout: whether the ResNet blocks had dropout (their second conv moves from
        `conv_block.5` to `conv_block.6`). UNet dropout holds no weights and leaves the keys
        alone, so it is always False for UNets; inference (`training=False`) does not use it.
      norm: always "instance" (affine-free InstanceNorm2d, the official CycleGAN choice).
      dropped_keys: the running-statistics keys of the norm layers that were ignored (PyTorch 0.4
        saved them for InstanceNorm; the official loader deletes them too).
    """

    generator: str
    ngf: int
    dropout: bool = False
    norm: str = "instance"
    dropped_keys: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict:
        """The architecture (without `dropped_keys`), e.g. for imported.json."""
        return {
            "generator": self.generator,
            "ngf": self.ngf,
            "dropout": self.dropout,
            "norm": self.norm,
        }


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One PyTorch module and the Keras layer that mirrors it."""

    torch: str  # module path, e.g. "model.10.conv_block.1"
    keras: str  # layer name, e.g. "block1_conv1"
    kind: str  # conv | conv_transpose | norm


def _resnet_entries(n_blocks: int, dropout: bool) -> list[_Entry]:
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
        block = f"model.{9 + b}.conv_block"
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


_RESNET_BLOCKS = {9: "resnet_9blocks", 6: "resnet_6blocks"}
_UNET_DOWNS = {8: "unet_256", 7: "unet_128"}


def _entries(layout: Layout) -> list[_Entry]:
    if layout.generator.startswith("resnet"):
        n_blocks = {v: k for k, v in _RESNET_BLOCKS.items()}[layout.generator]
        return _resnet_entries(n_blocks, layout.dropout)
    return _unet_entries({v: k for k, v in _UNET_DOWNS.items()}[layout.generator])


def _expected_keys(entries: list[_Entry]) -> tuple[list[str], set[str]]:
    """(parameter keys in order, optional running-statistics keys) of affine-free norms."""
    params, stats = [], set()
    for entry in entries:
        if entry.kind == "norm":
            stats.update(f"{entry.torch}.{name}" for name in _RUNNING_STATS)
        else:
            params += [f"{entry.torch}.weight", f"{entry.torch}.bias"]
    return params, stats


def infer_layout(state_dict: Mapping[str, np.ndarray], source: str = "the state_dict") -> Layout:
    """Recognises which official generator a state_dict holds.

    ResnetGenerator keys are `model.<i>...` with `model.<i>.conv_block.{1,5}` per residual block
    (`{1,6}` with dropout); UnetGenerator keys nest one `.model.<i>.model` per level
    (`model.model.1.model.3.model...`). `ngf` is the first conv's output channels. Every key must
    be one the recognised generator has; norm running statistics are the only extra keys allowed
    (and are dropped).

    Args:
      state_dict: key -> array, as `load_state_dict` returns it.
      source: what to call the state_dict in messages (the file name).

    Returns:
      The `Layout`; `dropped_keys` lists the running-statistics keys that were ignored.

    Raises:
      PretrainedError: the keys match no known generator (the message names the first unexpected
        or missing key).
    """
    keys = list(state_dict)
    if "model.1.weight" in state_dict:
        blocks = sorted(
            int(m.group(1))
            for k in keys
            if (m := re.fullmatch(r"model\.(\d+)\.conv_block\.1\.weight", k))
        )
        dropout = any(re.fullmatch(r"model\.\d+\.conv_block\.6\.weight", k) for k in keys)
        name = _RESNET_BLOCKS.get(len(blocks))
        if name is None:
            raise PretrainedError(
                f"{source} holds a ResnetGenerator with {len(blocks)} residual blocks; only 6 "
                "and 9 (resnet_6blocks, resnet_9blocks) can be imported."
            )
        ngf_key = "model.1.weight"
    elif any(k.startswith("model.model.") for k in keys):
        depth = 1
        while f"{_unet_prefix(depth + 1)}.1.weight" in state_dict:
            depth += 1
        name = _UNET_DOWNS.get(depth)
        if name is None:
            raise PretrainedError(
                f"{source} holds a UnetGenerator with {depth} downsamplings; only 7 and 8 "
                "(unet_128, unet_256) can be imported."
            )
        dropout, ngf_key = False, "model.model.0.weight"
    else:
        found = f"unexpected key {keys[0]!r}" if keys else "it is empty"
        raise PretrainedError(
            f"{source} matches no known generator layout: {found} (expected the official "
            "ResnetGenerator or UnetGenerator state_dict)."
        )
    shape = np.shape(state_dict.get(ngf_key))
    if len(shape) != 4:
        raise PretrainedError(f"{source}: {ngf_key} has shape {list(shape)}, expected 4 dims.")
    layout = Layout(name, int(shape[0]), dropout)

    entries = _entries(layout)
    params, stats = _expected_keys(entries)
    norms = {e.torch for e in entries if e.kind == "norm"}
    expected = set(params)
    for key in keys:
        if key not in expected and key not in stats:
            hint = ""
            if key.rsplit(".", 1)[0] in norms:
                hint = (
                    ": normalization weights (batch or affine instance norm); only affine-free "
                    "InstanceNorm generators, like the official CycleGAN ones, can be imported"
                )
            raise PretrainedError(
                f"{source} matches no known generator layout: unexpected key {key!r} for a "
                f"{name} generator{hint}."
            )
    missing = [k for k in params if k not in state_dict]
    if missing:
        raise PretrainedError(
            f"{source} matches no known generator layout: key {missing[0]!r} of a {name} "
            "generator is missing."
        )
    return dataclasses.replace(layout, dropped_keys=tuple(k for k in keys if k in stats))


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
    flip or shift is needed). Every Keras weight is assigned exactly once and every state_dict
    tensor except `layout.dropped_keys` is used exactly once.

    Args:
      model: a generator built like `generators.build_generator(layout.generator,
        ngf=layout.ngf, norm="instance", dropout=layout.dropout)` (any precision policy).
      state_dict: key -> array, as `load_state_dict` returns it.
      layout: from `infer_layout(state_dict)`.
      source: what to call the state_dict in messages.

    Raises:
      PretrainedError: a missing, unused or misshapen tensor (named), or a model that does not
        have the layout's layers.
    """
    assigned: set[int] = set()
    used: set[str] = set()
    for entry in _entries(layout):
        try:
            layer = model.get_layer(entry.keras)
        except ValueError:
            raise PretrainedError(
                f"model {model.name!r} has no layer {entry.keras!r}: build it for {layout}."
            ) from None
        if entry.kind == "norm":
            if layer.weights:
                raise PretrainedError(
                    f"model {model.name!r} has weights in {entry.keras!r}; {source} has an "
                    "affine-free InstanceNorm there (build the model with norm='instance')."
                )
            continue
        for variable, key in ((layer.kernel, "weight"), (layer.bias, "bias")):
            key = f"{entry.torch}.{key}"
            if variable is None or key not in state_dict or key in used:
                raise PretrainedError(
                    f"{source}: cannot assign {key!r} to layer {entry.keras!r} of {model.name!r}."
                )
            value = np.asarray(state_dict[key], np.float32)
            if value.ndim == 4:  # [out, in, kh, kw] / [in, out, kh, kw] -> [kh, kw, ., .]
                value = value.transpose(2, 3, 1, 0)
            if value.shape != tuple(variable.shape):
                torch_shape = list(np.shape(state_dict[key]))
                wanted = list(variable.shape)
                if len(wanted) == 4:
                    wanted = [wanted[3], wanted[2], wanted[0], wanted[1]]
                raise PretrainedError(
                    f"{source}: {key} has shape {torch_shape}, but the {layout.generator} "
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
    unused = [k for k in state_dict if k not in used and k not in layout.dropped_keys]
    if unused:
        raise PretrainedError(f"{source}: tensor {unused[0]!r} has no place in the model.")


def to_keras(
    state_dict: Mapping[str, np.ndarray],
    layout: Layout,
    model_name: str = "g_ab",
    source: str = "the state_dict",
) -> keras.Model:
    """Builds the generator `layout` describes and loads `state_dict` into it.

    Args:
      state_dict: key -> array, as `load_state_dict` returns it.
      layout: from `infer_layout(state_dict)`.
      model_name: the Keras model name: "g_ab" or "g_ba", like the trainer's generators.
      source: what to call the state_dict in messages.

    Returns:
      A Keras model `[N, H, W, 3]` float in [-1, 1] -> `[N, H, W, 3]` float32 that computes what
      the PyTorch generator computes in eval mode (H, W multiples of
      `generators.size_multiple(layout.generator)`; `inference.pad_run_crop` for any size).

    Raises:
      PretrainedError: see `assign`.
    """
    model = generators.build_generator(
        layout.generator,
        ngf=layout.ngf,
        norm=layout.norm,
        dropout=layout.dropout,
        model_name=model_name,
    )
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
        state_dict, kind, digest = _read(path)
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
        if other != layout:
            raise PretrainedError(
                f"{files[dirn]} holds {other.to_dict()} but {files[direction]} holds "
                f"{layout.to_dict()}; both directions of a run share one architecture."
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
        run_config = config_lib.preset(
            "paper",
            generator=layout.generator,
            ngf=layout.ngf,
            dropout=layout.dropout,
            precision="float32",
        )
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
        found = {
            "generator": saved.model.generator,
            "ngf": saved.model.ngf,
            "dropout": saved.model.dropout,
            "norm": saved.model.norm,
        }
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
            state_dict, _, digest = _read(files[direction])
            layout = infer_layout(state_dict, files[direction])
            _check_architecture(files[direction], layout.to_dict(), model_config)
            assign(targets[direction], state_dict, layout, source=files[direction])
            record["sha256"][direction] = digest
    record["directions"] = list(directions)
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return record


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
    wanted = {
        "generator": model.generator,
        "ngf": model.ngf,
        "dropout": model.dropout,
        "norm": model.norm,
    }
    for key, value in found.items():
        if value != wanted[key]:
            flag = {True: "--dropout", False: "--nodropout"}[value] if key == "dropout" else None
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
