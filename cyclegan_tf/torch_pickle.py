"""Reading PyTorch `.pth` state_dict files without PyTorch, executing nothing from them.

A `.pth` is a pickle, and loading a pickle runs whatever callables it names. `load_state_dict`
reads both formats `torch.save` writes: the legacy stream (PyTorch < 1.6, e.g. every official
CycleGAN file: a few header pickles, the state_dict pickle, then the raw storages) and the zip
archive (PyTorch >= 1.6: `<top>/data.pkl` + `<top>/data/<key>`). Its unpickler resolves only the
handful of names a state_dict needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`, the typed storage classes) to local stand-ins that build numpy
arrays, and refuses every other name before anything is called.

What the tensors mean (which generator they describe) is `pretrained.py`'s business.

Errors are `TorchFileError` (an `errors.UserError`): one line naming the file and the problem.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

from cyclegan_tf import errors

# The legacy format's first two pickles (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"


class TorchFileError(errors.UserError):
    """A file that is not a readable PyTorch state_dict, or one that must not be loaded (it names
    something a state_dict never needs); the message says which and why."""


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


def read(path: str) -> tuple[dict[str, np.ndarray], str, str]:
    """(state_dict, format, sha256) of a file: `load_state_dict` plus "legacy" | "zip" and the
    file's sha256 (hex), read once."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TorchFileError(f"cannot read {path}: {e.strerror or e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(_ZIP_MAGIC):
        kind, reader = "zip", _read_zip
    elif data.startswith(b"\x80\x02\x8a\x0a"):  # PROTO 2, LONG1 of 10 bytes: the magic number
        kind, reader = "legacy", _read_legacy
    else:
        raise TorchFileError(
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
        raise TorchFileError(f"refusing to load {path}: {e}; the file may be malicious") from None
    except _Corrupt as e:
        raise TorchFileError(f"cannot load {path} ({kind} format): {e}") from None
    except Exception as e:  # anything the pickle VM or zipfile raises on malformed input
        raise TorchFileError(
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
      TorchFileError: the file is unreadable, not a state_dict, corrupt, or references anything
        a state_dict never needs (the message names it).
    """
    return read(path)[0]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
