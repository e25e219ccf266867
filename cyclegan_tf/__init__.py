"""cyclegan_tf: CycleGAN (Zhu et al. 2017) for TensorFlow 2.21+ / Keras 3.

The public API, importable from here (README "Python API"):

    load(model, direction="a2b", *, checkpoint=None, precision="auto") -> Translator
    train(dataset, output_dir, *, preset="paper", **flags) -> TrainResult
    export(run_dir, export_dir, *, formats=("saved_model",), ...) -> {format: {direction: path}}
    evaluate(model, dataset, *, direction="a2b", ...) -> dict of FID/KID
    import_torch(weights, output_dir, *, direction="a2b", ...) -> run directory
    Translator, TrainResult, errors

`import cyclegan_tf` imports no TensorFlow: each name is imported when first used (module
`__getattr__`), so the CLI checks its flags within a second and `import cyclegan_tf` stays cheap.
The modules (`cyclegan_tf.generators`, ...) are imported as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cyclegan_tf.version import __version__

# Public name -> (module, attribute in it); None: the module itself.
_API = {
    "load": ("sources", "load"),
    "Translator": ("sources", "Translator"),
    "train": ("api", "train"),
    "export": ("api", "export"),
    "evaluate": ("api", "evaluate"),
    "import_torch": ("api", "import_torch"),
    "TrainResult": ("training", "TrainResult"),
    "errors": ("errors", None),
}
__all__ = [*_API, "__version__"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports these
    from cyclegan_tf import errors as errors
    from cyclegan_tf.api import evaluate as evaluate
    from cyclegan_tf.api import export as export
    from cyclegan_tf.api import import_torch as import_torch
    from cyclegan_tf.api import train as train
    from cyclegan_tf.sources import Translator as Translator
    from cyclegan_tf.sources import load as load
    from cyclegan_tf.training import TrainResult as TrainResult


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'cyclegan_tf' has no attribute {name!r}")
    module_name, attribute = _API[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
