"""The companion notebook runs top to bottom, offline, with a tiny model.

The test executes notebooks/cyclegan_walkthrough.ipynb with nbclient, the way papermill would: a
cell inserted after the cell tagged `parameters` overrides the defaults (tiny preset, a few steps,
a temporary WORK_DIR). DATASET points at a folder that does not exist, so the notebook's fallback
to the built-in dataset runs whatever the network (a TFDS name would download when online).
"""

import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "cyclegan_walkthrough.ipynb"
CELL_TIMEOUT_S = 300
FIGURES = (
    "pipeline_samples",
    "pipeline_jitter",
    "patchgan_receptive_field",
    "grid_before",
    "losses",
    "grid_before_after",
    "serving",
    "test_translations",
)


def _parameters(work_dir: pathlib.Path) -> dict:
    return {
        "DATASET": str(work_dir / "no_such_dataset"),
        "PRESET": "tiny",
        "IMAGE_SIZE": 32,
        "STEPS": 10,
        "RESUME_STEPS": 3,
        "SEED": 0,
        "WORK_DIR": str(work_dir),
    }


def _inject(nb, parameters: dict) -> None:
    """Inserts a cell assigning `parameters` after the one tagged `parameters`, as papermill."""
    index = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None
    )
    assert index is not None, "the notebook needs a code cell tagged 'parameters'"
    defaults = nb.cells[index].source
    for name in parameters:
        assert f"\n{name} = " in f"\n{defaults}", f"{name} is not a notebook parameter"
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    cell.id = "injected-parameters"
    nb.cells.insert(index + 1, cell)


def _python3_kernel_is_this_interpreter(tmp_path, monkeypatch) -> None:
    """Makes `python3` a kernelspec that runs this interpreter (JUPYTER_PATH is searched first).

    Without it, a `python3` kernelspec in the user's Jupyter directory could start another Python.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # Connection files and IPython's profile (history) stay out of the home directory.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def _text(nb) -> str:
    return "\n".join(
        output.get("text", "") for cell in nb.cells for output in cell.get("outputs", [])
    )


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow(seconds=55)
def test_notebook_runs_offline_with_tiny_parameters(tmp_path, monkeypatch):
    _python3_kernel_is_this_interpreter(tmp_path, monkeypatch)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    work_dir = tmp_path / "work"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _inject(nb, _parameters(work_dir))

    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails

    text = _text(nb)
    assert sys.executable in text, "the kernel must run the test's interpreter"
    assert "falling back to the built-in dataset" in text
    assert "identity" in text  # the score table against the identity baseline
    assert "matches" in text and "DIFFERS" not in text  # official parameter counts
    missing = [f for f in FIGURES if not (work_dir / "figures" / f"{f}.png").is_file()]
    assert not missing, f"figures not written: {missing}"

    run_dir = work_dir / "run"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert steps[-1] == 10
    assert (run_dir / "checkpoints" / "ckpt-10.index").is_file()
    assert (run_dir / "checkpoints" / "ckpt-13.index").is_file()  # restored, then 3 more steps
    for direction in ("a2b", "b2a"):
        version = work_dir / "export" / f"cyclegan_{direction}" / "1"
        assert (version / "saved_model.pb").is_file()
        info = json.loads((version / "assets" / "export.json").read_text())
        assert info["step"] == 13
