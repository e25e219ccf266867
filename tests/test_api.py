"""Tests for the public API (`cyclegan_tf.load`, `train`, `export`, `evaluate`, `import_torch`,
`Translator`): a lazy package root, the import graph read module by module, a Translator on every
kind of source and input against the files the command writes, train's flags, and the README's
Python examples run as written (with the tiny preset)."""

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import fixtures
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import cyclegan_tf
from cyclegan_tf import api, errors, sources
from cyclegan_tf import config as config_lib

PACKAGE = pathlib.Path(cyclegan_tf.__file__).parent
README = PACKAGE.parent / "README.md"

# The package read top-down as the data flows: a module imports only modules listed before it
# (`test_imports_run_downward`). Each line is one floor; modules on a floor import none of the
# others on it.
FLOORS = [
    ["errors", "version"],
    ["hardware", "nativelog"],
    ["precision"],
    ["config", "images", "torch_pickle", "video"],
    ["rundir", "cluster", "synthetic", "visualize"],
    ["checkpoints", "data", "metrics", "layers"],
    ["generators", "discriminators", "losses", "image_pool", "schedules", "optimizers"],
    ["trainer", "inference", "pretrained"],
    ["evaluation"],
    ["training", "translate"],
    ["sources"],
    ["exporting", "demo"],
    ["api"],
    ["cli"],
]


def _python(code, **env):
    """Runs `code` in a fresh interpreter (this one, this PYTHONPATH); returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# -- the package root and the import graph -----------------------------------------------------


def test_import_cyclegan_tf_imports_no_tensorflow_and_names_resolve_lazily():
    out = _python(
        """
        import json, sys
        import cyclegan_tf
        heavy = [m for m in ("tensorflow", "keras", "numpy", "absl") if m in sys.modules]
        ours = [m for m in sys.modules if m.startswith("cyclegan_tf.")]
        print(json.dumps({"heavy": heavy, "ours": ours, "all": cyclegan_tf.__all__}))
        """
    )
    found = json.loads(out)
    assert found["heavy"] == []  # nothing heavy
    assert found["ours"] == ["cyclegan_tf.version"]  # no other submodule yet
    assert {"load", "train", "export", "evaluate", "import_torch"} <= set(found["all"])
    assert {"Translator", "TrainResult", "errors"} <= set(found["all"])
    # Each public name is what its home module defines, and stays so (a second lookup, after
    # the modules of the same concepts were imported, gives the same object).
    assert cyclegan_tf.load is sources.load and cyclegan_tf.Translator is sources.Translator
    assert cyclegan_tf.train is api.train and cyclegan_tf.export is api.export
    assert cyclegan_tf.evaluate is api.evaluate and cyclegan_tf.import_torch is api.import_torch
    assert cyclegan_tf.errors is errors
    from cyclegan_tf import evaluation, exporting, training  # noqa: F401

    assert cyclegan_tf.TrainResult is training.TrainResult
    assert callable(cyclegan_tf.train) and callable(cyclegan_tf.export)
    assert callable(cyclegan_tf.evaluate)
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        cyclegan_tf.lod  # noqa: B018


def test_training_imports_no_command_and_the_cli_starts_without_tensorflow():
    out = _python(
        """
        import sys
        import cyclegan_tf.training
        print(sorted(m for m in sys.modules if m.startswith("cyclegan_tf.")))
        """
    )
    imported = set(ast.literal_eval(out.strip()))
    assert "cyclegan_tf.evaluation" in imported  # the training evaluator, from below
    for above in ("translate", "sources", "exporting", "api", "cli"):
        assert f"cyclegan_tf.{above}" not in imported, above
    # The CLI checks flags, config, dataset folder and run directory before TensorFlow.
    out = _python("import sys, cyclegan_tf.cli; print('tensorflow' in sys.modules)")
    assert out.strip() == "False"


def _imports(path):
    """The cyclegan_tf modules `path` imports anywhere in it (top level or in functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "cyclegan_tf":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cyclegan_tf."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("cyclegan_tf.")
            )
    return names


def test_imports_run_downward():
    floor = {name: i for i, names in enumerate(FLOORS) for name in names}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    # A new module gets its floor here: where it sits in the flow is a decision, not a default.
    assert modules <= set(floor), f"place {sorted(modules - set(floor))} in FLOORS"
    upward = [
        f"{module} imports {target}"
        for module in sorted(modules)
        for target in sorted(_imports(PACKAGE / f"{module}.py"))
        if target in floor and floor[target] >= floor[module] and target != module
    ]
    assert not upward, upward


# -- the Translator ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def translators(shared_run):
    """The shared run (float32) and its export, SavedModel, TFLite and ONNX, all a2b."""
    export_dir, files = shared_run["export_dir"], shared_run["files"]
    return {
        "run": cyclegan_tf.load(shared_run["run_dir"], precision="float32"),
        "saved_model": cyclegan_tf.load(export_dir),
        "tflite": cyclegan_tf.load(files["tflite"]),
        "onnx": cyclegan_tf.load(files["onnx"]),
    }


def test_a_translator_describes_its_source(translators, shared_run):
    run, saved = translators["run"], translators["saved_model"]
    assert (run.kind, run.direction, run.precision) == ("run", "a2b", "float32")
    assert run.source == shared_run["run_dir"] and run.checkpoint.endswith("ckpt-3")
    assert run.step == 0  # the step the checkpoint records: make_run's model never trained
    assert run.generator is not None and run.generator.name == "g_ab"
    assert saved.kind == "saved_model" and saved.source == shared_run["saved_models"]["a2b"]
    assert saved.generator is None and saved.precision == "float32" and saved.step == 0
    for fmt in ("tflite", "onnx"):
        assert translators[fmt].kind == fmt and translators[fmt].generator is None
        assert translators[fmt].config == run.config
    assert "kind='run'" in repr(run)
    b2a = cyclegan_tf.load(shared_run["export_dir"], "b2a")
    assert b2a.direction == "b2a" and b2a.source == shared_run["saved_models"]["b2a"]


def test_numpy_tf_and_pil_inputs_of_odd_sizes_give_the_commands_pixels(translators, tmp_path):
    images = {  # odd sizes: padded to the generator's multiple and cropped back
        "a.png": fixtures.random_image(37, 53, seed=1),
        "b.png": fixtures.random_image(5, 7, seed=2),
        "c.png": fixtures.random_image(64, 33, seed=3),
    }
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, image in images.items():
        PIL.Image.fromarray(image).save(inputs / name)
    for kind, translator in translators.items():
        # What the command writes: translate_files, the code `cyclegan-tf translate` runs.
        summary = translator.translate_files(str(inputs), str(tmp_path / kind), verbose=False)
        assert len(summary.written) == 3 and not summary.failed
        for name, image in images.items():
            want = np.asarray(PIL.Image.open(tmp_path / kind / name))
            from_numpy = translator(image)
            assert from_numpy.shape == image.shape and from_numpy.dtype == np.uint8
            np.testing.assert_array_equal(from_numpy, want, err_msg=f"{kind} {name}")
            np.testing.assert_array_equal(translator(tf.constant(image)), want)
            np.testing.assert_array_equal(translator(PIL.Image.fromarray(image)), want)
            # A grayscale PIL image is converted to RGB, as the command decodes it.
            gray = PIL.Image.fromarray(image).convert("L")
            assert translator(gray).shape == image.shape
        # A batch is one call: [N, H, W, 3] in, the same shape out, each image as alone.
        batch = np.stack([fixtures.random_image(19, 26, seed=s) for s in range(3)])
        out = translator(batch)
        assert out.shape == batch.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[1], translator(batch[1]))
        assert translator(batch[:0]).shape == (0, 19, 26, 3)


def test_every_source_gives_the_same_pixels(translators):
    # The run in float32 and its float32 SavedModel run the same function on the same weights;
    # the TFLite and ONNX files are checked within a uint8 level when exported
    # (exporting.CHECK_TOLERANCE: float differences of ~1e-6 may flip a rounding).
    image = fixtures.random_image(45, 30, seed=7)
    reference = translators["saved_model"](image).astype(int)
    np.testing.assert_array_equal(translators["run"](image), reference)
    for fmt in ("tflite", "onnx"):
        assert np.abs(translators[fmt](image).astype(int) - reference).max() <= 1, fmt


def test_images_that_are_not_uint8_rgb_are_one_line_errors(translators):
    translator = translators["run"]
    for bad, match in [
        (np.zeros((8, 8, 3), np.float32), "must be uint8"),
        (np.zeros((8, 8), np.uint8), r"RGB \[H, W, 3\]"),
        (np.zeros((8, 8, 4), np.uint8), r"got shape \(8, 8, 4\)"),
        (np.zeros((1, 2, 8, 8, 3), np.uint8), r"got shape"),
    ]:
        with pytest.raises(sources.ImageInputError, match=match) as error:
            translator(bad)
        assert isinstance(error.value, errors.UserError) and "\n" not in str(error.value)


def test_load_raises_the_commands_one_line_errors(shared_run, tmp_path):
    with pytest.raises(errors.UserError, match="neither a run directory") as error:
        cyclegan_tf.load(str(tmp_path))
    assert "\n" not in str(error.value)
    with pytest.raises(errors.UserError, match="--checkpoint applies to run directories"):
        cyclegan_tf.load(shared_run["export_dir"], checkpoint="3")
    with pytest.raises(errors.ConfigError, match="direction must be a2b or b2a"):
        cyclegan_tf.load(shared_run["run_dir"], "both")


# -- train's flags -----------------------------------------------------------------------------


def test_train_takes_the_clis_flags_and_names_the_closest_for_a_typo(tmp_path):
    from absl import flags

    from cyclegan_tf import cli

    # Every flag the train command passes on is a keyword of cyclegan_tf.train.
    cli_names = {name for name in api.train_flag_names() if name in flags.FLAGS}
    assert {"max_steps", "crop_size", "lambda_cycle", "init_from", "export_dir"} <= cli_names
    assert cli._train_flags().keys() == cli_names
    with pytest.raises(TypeError, match="'max_step'; did you mean 'max_steps'"):
        cyclegan_tf.train("builtin", str(tmp_path / "run"), preset="tiny", max_step=2)
    with pytest.raises(TypeError, match="'lamda_cycle'; did you mean 'lambda_cycle'"):
        cyclegan_tf.train("builtin", str(tmp_path / "run"), lamda_cycle=5)
    config, options = api.train_config("builtin", preset="quick", lambda_cycle=5, ngf=None)
    quick_ngf = config_lib.preset("quick").model.ngf  # None keeps the preset's value
    assert (config.loss.lambda_a, config.loss.lambda_b, config.model.ngf) == (5, 5, quick_ngf)
    assert options["resume"] is True and options["export_dir"] is None
    # The command's one-line errors, raised (never an exit), before anything is written.
    with pytest.raises(errors.UserError, match="Dataset folder .* does not exist"):
        cyclegan_tf.train(str(tmp_path / "nowhere"), str(tmp_path / "run"), preset="tiny")
    with pytest.raises(errors.ConfigError, match="--weights_b2a goes with --init_from"):
        cyclegan_tf.train("builtin", str(tmp_path / "run"), weights_b2a="b.pth")
    assert not (tmp_path / "run").exists()


# -- the README's examples ---------------------------------------------------------------------


def readme_python_examples():
    """The ```python blocks of README's "Python API" section, in order."""
    text = README.read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow(seconds=120)
def test_the_readmes_python_examples_run(tmp_path):
    blocks = readme_python_examples()
    assert len(blocks) >= 3 and all("cyclegan_tf." in block for block in blocks)
    code = "\n".join(blocks)
    # The quick preset trains for minutes: the examples run on the tiny one, two steps.
    assert code.count('preset="quick"') == 1
    code = code.replace('preset="quick"', 'preset="tiny", max_steps=2')
    # evaluate's Inception graph: the stand-in instead of the download (the cache only trusts a
    # file of the real graph's size).
    assert code.count('output="fid.json"') == 1
    code = code.replace('output="fid.json"', 'output="fid.json", inception_graph="standin.pb"')
    # What the examples read: a photo and a folder of them, and the official generator file (a
    # small one of the same architecture family, tests/data/torch), so nothing is downloaded.
    fixtures_dir = pathlib.Path(__file__).parent
    PIL.Image.fromarray(fixtures.random_image(45, 61, seed=0)).save(tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    for i in range(2):
        PIL.Image.fromarray(fixtures.random_image(30, 40, seed=i)).save(
            tmp_path / "photos" / f"{i}.png"
        )
    shutil.copy(
        fixtures_dir / "data" / "torch" / "resnet6_legacy.pth", tmp_path / "horse2zebra.pth"
    )
    shutil.move(fixtures.write_standin_inception_graph(tmp_path), tmp_path / "standin.pb")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "Translator(direction='a2b', kind='run'" in out
    assert os.path.join("exported", "cyclegan_a2b", "1") in out
    assert "(64, 64, 3)" in out and "is neither a run directory" in out
    assert (tmp_path / "photo_a2b.png").is_file() and (tmp_path / "fid.json").is_file()
    assert '"fid"' in (tmp_path / "fid.json").read_text()
    assert sorted(os.listdir(tmp_path / "translated")) == ["0.png", "1.png"]
    assert (tmp_path / "runs" / "h2z_official" / "imported.json").is_file()
