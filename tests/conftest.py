"""Shared test setup: quiet TensorFlow, an isolated cache for the built-in dataset, tiny configs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The built-in dataset is generated into a per-session temporary cache, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "cyclegan_tf_cache"
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(cache))


@pytest.fixture
def mixed_bfloat16():
    """Builds layers under the mixed_bfloat16 policy; the global policy is float32 again after."""
    from cyclegan_tf import precision

    with precision.policy("mixed_bfloat16"):
        yield
