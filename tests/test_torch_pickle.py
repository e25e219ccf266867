"""Tests for cyclegan_tf.torch_pickle: reading .pth files of both formats without running them.

The readable files (tests/data/torch/*.pth) are read in tests/test_pretrained.py, which also checks
that `import-torch` refuses a malicious file without running it; here: refusing pickles that name
anything a state_dict never needs, and corrupt files, in one line.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from cyclegan_tf import errors, torch_pickle

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch")

_LEGACY_HEADER = (
    0x1950A86A20F9469CFC6C,
    1001,
    {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4}},
)


def _path(name):
    return os.path.join(DATA, f"{name}.pth")


def _rewrite_zip(source, target, edits):
    """Copies zip `source` to `target`, passing each member whose name ends with a key of `edits`
    through its function (bytes -> bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(buffer, "w") as new:
        for info in old.infolist():
            data = old.read(info.filename)
            for suffix, edit in edits.items():
                if info.filename.endswith(suffix):
                    data = edit(data)
            new.writestr(info, data)
    with open(target, "wb") as f:
        f.write(buffer.getvalue())
    return str(target)


class _System:
    """Pickles as a call of os.system (what a malicious .pth does)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _legacy(payload):
    """The legacy .pth framing around `payload` (the position of the state_dict pickle)."""
    header = b"".join(pickle.dumps(obj, protocol=2) for obj in _LEGACY_HEADER)
    return header + payload + pickle.dumps([], protocol=2)


def _zip(payload):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("exploit/data.pkl", payload)
        archive.writestr("exploit/byteorder", "little")
        archive.writestr("exploit/version", "3\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload, match",
    [
        # torch.load(weights_only=False) would call these; a state_dict never references them.
        (b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00.", "torch.storage._load_from_bytes"),
        (b"\x80\x02cbuiltins\neval\nq\x00.", "builtins.eval"),
        # BUILD on an allowed global: setting attributes of our stand-ins is refused too.
        (
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x01\x00\x00\x00aK\x01sb.",
            "sets the state",
        ),
        # Calling a storage class (legacy torch pickled storages that way): refused.
        (b"\x80\x02ctorch\nFloatStorage\n)R.", "calls torch.FloatStorage"),
    ],
)
def test_other_unneeded_globals_are_refused(tmp_path, payload, match):
    weights = tmp_path / "evil.pth"
    weights.write_bytes(_legacy(payload))
    with pytest.raises(torch_pickle.TorchFileError, match=match):
        torch_pickle.load_state_dict(str(weights))


def test_a_bare_pickle_is_not_a_state_dict_file(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(_System(f"touch {marker}"), protocol=2))
    with pytest.raises(torch_pickle.TorchFileError, match="is not a PyTorch state_dict file"):
        torch_pickle.load_state_dict(str(weights))
    assert not marker.exists()


def test_corrupt_files_are_refused_in_one_line(tmp_path):
    with open(_path("resnet6_legacy"), "rb") as f:
        legacy = f.read()
    (tmp_path / "truncated.pth").write_bytes(legacy[:-100])
    (tmp_path / "not_a_dict.pth").write_bytes(_legacy(pickle.dumps([1, 2], protocol=2)))
    _rewrite_zip(_path("resnet9_zip"), tmp_path / "short.pth", {"/data/0": lambda b: b[:-4]})
    with (
        zipfile.ZipFile(_path("resnet9_zip")) as old,
        zipfile.ZipFile(tmp_path / "compressed.pth", "w", zipfile.ZIP_DEFLATED) as new,
    ):
        for name in old.namelist():
            new.writestr(name, old.read(name))  # deflated: a zip bomb could hide there
    expected = {
        "truncated.pth": "the file is truncated",
        "not_a_dict.pth": "it holds a list, not a state_dict",
        "short.pth": "resnet9_zip/data/0 is missing or not 1176 bytes long",
        "compressed.pth": "resnet9_zip/byteorder is compressed, which torch.save never does",
        "missing.pth": "cannot read",
    }
    for name, reason in expected.items():
        path = str(tmp_path / name)
        with pytest.raises(torch_pickle.TorchFileError) as error:
            torch_pickle.load_state_dict(path)
        message = str(error.value)
        assert path in message and reason in message and "\n" not in message, message


def test_errors_are_user_errors():
    assert issubclass(torch_pickle.TorchFileError, errors.UserError)


def test_reads_both_formats_with_their_digest():
    for name, kind in (("resnet6_legacy", "legacy"), ("resnet9_zip", "zip")):
        state_dict, found, digest = torch_pickle.read(_path(name))
        assert found == kind and len(digest) == 64
        assert all(isinstance(v, np.ndarray) for v in state_dict.values())
