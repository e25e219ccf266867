"""hardware.configure_gpus: GPU memory growth, decided once per process, before GPUs initialise.
The GPUs are pretended (monkeypatched tf.config), so the tests mean the same on a host with GPUs."""

import logging

import pytest
import tensorflow as tf

from cyclegan_tf import errors, exporting, hardware, sources


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two pretended GPUs; returns the (name, growth) calls of set_memory_growth."""
    gpus = [
        tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")
        for i in range(2)
    ]
    calls = []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda d, on: calls.append((d.name, on))
    )
    monkeypatch.setattr(hardware, "_decision", None)  # a fresh process
    return calls


def test_growth_on_every_gpu_and_the_first_decision_stays(fake_gpus):
    assert hardware.configure_gpus() is True
    assert fake_gpus == [("/physical_device:GPU:0", True), ("/physical_device:GPU:1", True)]
    fake_gpus.clear()
    assert hardware.configure_gpus() is True and fake_gpus == []  # decided already
    assert hardware.configure_gpus(False) is False  # an explicit value applies
    assert [on for _, on in fake_gpus] == [False, False]


def test_gpus_initialised_before_keep_their_setting_with_a_warning(fake_gpus, monkeypatch, caplog):
    def initialised(device, on):
        raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", initialised)
    with caplog.at_level(logging.WARNING):
        assert hardware.configure_gpus() is None
    assert "GPU memory growth left as it was" in caplog.text


def test_no_gpu_nothing_to_set(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # any host
    monkeypatch.setattr(hardware, "_decision", None)
    assert hardware.configure_gpus() is None


def test_export_and_opening_a_model_set_it_before_anything_else(fake_gpus, tmp_path):
    with pytest.raises(errors.UserError):  # the run directory does not exist
        exporting.export_run(str(tmp_path / "no_run"), str(tmp_path / "out"))
    assert [on for _, on in fake_gpus] == [True, True]
    hardware._decision = None
    fake_gpus.clear()
    with pytest.raises(errors.UserError):  # there is no model
        sources.load(str(tmp_path / "no_model"))
    assert [on for _, on in fake_gpus] == [True, True]
