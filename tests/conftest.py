"""Shared test setup: quiet TensorFlow, an isolated cache for the built-in dataset, tiny configs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On an Ampere+ GPU TensorFlow runs float32 convolutions and matmuls in TF32 (10-bit mantissa)
# unless told not to; the tests' float32 tolerances are float32 rounding's. This NVIDIA variable
# (cuBLAS/cuDNN) also reaches the CLI subprocesses the tests start. No effect without a GPU.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The built-in dataset is generated into a per-session temporary cache, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "cyclegan_tf_cache"
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(cache))


@pytest.fixture(autouse=True)
def _fresh_hardware_probe():
    """A test that pretends devices (monkeypatched tf.config) resets the hardware probe; the probe
    is forgotten after every test so that nothing pretended outlives it."""
    yield
    from cyclegan_tf import hardware

    hardware.reset()


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """One tiny run and its exports for the whole session (`fixtures.build_shared_run`), shared
    READ-ONLY by the translate, evaluate, export and API tests instead of each building its own:
    copy it (`shutil.copytree`) to change anything. Checked at the end of the session: a test
    that wrote into it fails the session's last test that used it."""
    import fixtures

    shared = fixtures.build_shared_run(tmp_path_factory.mktemp("shared_run"))
    before = fixtures.tree_state(shared["run_dir"], shared["export_dir"])
    yield shared
    after = fixtures.tree_state(shared["run_dir"], shared["export_dir"])
    assert after == before, "a test wrote into the shared run or its exports (read-only)"


@pytest.fixture
def mixed_bfloat16():
    """Builds layers under the mixed_bfloat16 policy; the global policy is float32 again after."""
    from cyclegan_tf import precision

    with precision.policy("mixed_bfloat16"):
        yield


def pytest_collection_modifyitems(config, items):
    """Starts the longest tests first, spread over the xdist workers.

    With `-n 2 --dist=worksteal` each worker first gets a contiguous half of the collection and
    idle workers steal from the end of the other's queue. In collection (file) order the longest
    tests sit in the second half, so one of them could still run while the other worker had
    nothing left. Here the slow tests that share no module-scoped fixture (moving a test away
    from its module would set that fixture up on both workers) go to the front of the workers'
    queues, longest first, dealt in turn; the rest keep their order.
    `@pytest.mark.slow(seconds=N)`: N is a rough duration, used only for this ordering.
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers < 2:
        return

    def movable(item):
        marker = item.get_closest_marker("slow")
        if marker is None:
            return False
        defs = item._fixtureinfo.name2fixturedefs.values()
        return all(d[-1].scope == "function" or not d[-1].baseid for d in defs)

    slow = sorted(
        (i for i in items if movable(i)),
        key=lambda i: -i.get_closest_marker("slow").kwargs.get("seconds", 0),
    )
    moved = {id(i) for i in slow}
    rest = [i for i in items if id(i) not in moved]
    queues, remaining = [], len(items)
    for w in range(workers):  # the sizes xdist's worksteal scheduler sends each worker
        size = remaining // (workers - w)
        remaining -= size
        head = slow[w::workers]
        take = max(0, size - len(head))
        queues.append(head + rest[:take])
        rest = rest[take:]
    queues[-1] += rest
    items[:] = [i for q in queues for i in q]
