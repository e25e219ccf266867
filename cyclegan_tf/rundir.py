"""The run directory: its layout, config.json, the data record, which generators it has, the lock,
preparing and overwriting.

A run directory (`--output_dir`) holds what one training run writes, and nothing here touches
anything else in it:

    config.json        the resolved config (a resume must be compatible with it)
    data.json          what the run trains on (dataset, image counts, a fingerprint of the names)
    file_checks.json   folder datasets: which image files decode, by path, size and mtime, so a
                       later start decodes only new or changed files (`data.FileChecks`)
    checkpoints/       tf.train.CheckpointManager files (rotated), and epochs/ (kept)
    logs/              TensorBoard scalars and image grids
    images/            epoch_<NNN>.png grids (real A, fake B, rec A / real B, fake A, rec B)
    metrics.jsonl      one JSON line per logged step
    score.json         built-in dataset only: the ground-truth score of G_AB
    translated/        train --export_dir: the test images translated by the export
    best/              train --eval_every_epochs: generators with the best mean FID, best.json
    init.json          train --init_from: the run or .pth files the generators started from
    imported.json      import-torch only (no training state): the source files and the
                       directions present (`imported_directions`, `check_directions`)
    .lock              held (flock) by the process training into the directory

Rules (all pure Python: the CLI applies them before importing TensorFlow):
- A directory is a run when its config.json is a cyclegan_tf config. A config.json of anything
  else makes the directory unusable as a run directory; it is never modified or deleted.
- `check` decides what a start means (new run, resume, overwrite) without writing; `create`
  writes config.json and data.json only once the model has been built, so a start that fails
  leaves nothing that blocks the corrected command.
- Overwriting deletes only the artefacts listed above, never other files in the directory.
- One training process per directory: `lock` holds an flock on `.lock`; the kernel releases it
  when the process dies, so a killed run never blocks the next one.
- Multi-worker training (`cluster.py`): only the chief applies these rules and writes here; the
  other workers only read checkpoints from here, so the directory must be on a filesystem
  every worker sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator

from cyclegan_tf import config as config_lib
from cyclegan_tf import errors
from cyclegan_tf import precision as precision_lib

# The translation directions and the checkpoint object name of each one's generator.
DIRECTIONS = ("a2b", "b2a")
GENERATOR_NAMES = {"a2b": "g_ab", "b2a": "g_ba"}
CONFIG_FILE = "config.json"
DATA_RECORD_FILE = "data.json"
FILE_CHECKS = "file_checks.json"
CHECKPOINTS = "checkpoints"
EPOCH_CHECKPOINTS = "epochs"  # inside checkpoints/
LOGS = "logs"
IMAGES = "images"
METRICS_FILE = "metrics.jsonl"
SCORE_FILE = "score.json"
TRANSLATED = "translated"
BEST = "best"  # train --eval_every_epochs: the generators with the best mean FID (evaluation.py)
INIT_FILE = "init.json"  # train --init_from: where the generators started (pretrained.py)
IMPORTED_FILE = "imported.json"  # written by pretrained.import_torch: no training state
LOCK_FILE = ".lock"
# Everything a run writes into its directory, i.e. everything an overwrite may delete.
ARTEFACTS = (
    CONFIG_FILE,
    DATA_RECORD_FILE,
    FILE_CHECKS,
    CHECKPOINTS,
    LOGS,
    IMAGES,
    METRICS_FILE,
    SCORE_FILE,
    TRANSLATED,
    BEST,
    INIT_FILE,
)

# Fields that may change between the original run and a resume: they steer the loop, not the
# model or the data stream. Anything else must match config.json.
RESUMABLE_CHANGES = {
    ("train", "max_steps"),
    ("train", "save_epoch"),
    ("train", "save_steps"),
    ("train", "keep_checkpoints"),
    ("train", "log_steps"),
    ("train", "deterministic"),
    ("optim", "n_epochs"),
    ("optim", "n_epochs_decay"),
}


class RunDirError(errors.UserError):
    """The output directory cannot be used as asked (exists, foreign, incompatible, locked)."""


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS)


def epoch_checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS, EPOCH_CHECKPOINTS)


# -- config.json -----------------------------------------------------------------------------


def read_config(run_dir: str) -> config_lib.Config | None:
    """The run's Config, or None when `run_dir` has no config.json.

    Raises:
      RunDirError: config.json exists but is not a cyclegan_tf config (unreadable, foreign, or
        from an incompatible version).
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return config_lib.Config.from_json(f.read())
    except (OSError, ValueError, TypeError) as e:
        raise RunDirError(
            f"{path} is not a cyclegan_tf run config ({_first_line(e)}); nothing in {run_dir!r} "
            "is touched: pass a directory `cyclegan-tf train` wrote, or a new one to train into."
        ) from e


def require_config(run_dir: str) -> config_lib.Config:
    """The run's Config, for everything that reads a finished or running run (export,
    translate, evaluate, --init_from).

    Raises:
      RunDirError: `run_dir` has no config.json (not a run directory) or a foreign one.
    """
    config = read_config(run_dir)
    if config is None:
        raise RunDirError(
            f"{run_dir!r} is not a run directory: it has no {CONFIG_FILE} (train with "
            "`cyclegan-tf train --output_dir=...` first)."
        )
    return config


def config_diff(saved: config_lib.Config, new: config_lib.Config) -> list[str]:
    """Fields that differ and may not change on resume, as 'section.field: old -> new'."""
    out = []
    saved_d, new_d = saved.to_dict(), new.to_dict()
    for section, fields in saved_d.items():
        for field, old in fields.items():
            value = new_d[section][field]
            if old != value and (section, field) not in RESUMABLE_CHANGES:
                out.append(f"{section}.{field}: {old!r} -> {value!r}")
    return out


# -- which generators a run has --------------------------------------------------------------


def read_imported(run_dir: str) -> dict | None:
    """`<run_dir>/imported.json` (written by `pretrained.import_torch`), or None without one.

    Raises:
      RunDirError: the file exists but is not a JSON object.
    """
    path = os.path.join(run_dir, IMPORTED_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {path}: {_first_line(e)}") from None
    if not isinstance(record, dict):
        raise RunDirError(f"cannot read {path}: not a JSON object")
    return record


def imported_directions(run_dir: str) -> tuple[str, ...]:
    """The directions a run directory has generators for.

    Args:
      run_dir: a run directory.

    Returns:
      For a run written by `pretrained.import_torch`, the imported directions (e.g. `("a2b",)`);
      for any other run (`imported.json` absent), both `DIRECTIONS`.

    Raises:
      RunDirError: an unreadable imported.json, or one listing unknown directions.
    """
    record = read_imported(run_dir)
    if record is None:
        return DIRECTIONS
    directions = record.get("directions")
    path = os.path.join(run_dir, IMPORTED_FILE)
    if not isinstance(directions, list) or not set(directions) <= set(DIRECTIONS):
        raise RunDirError(f"{path} lists unknown directions: {directions!r:.80}")
    return tuple(d for d in DIRECTIONS if d in directions)


def check_directions(run_dir: str, directions: tuple[str, ...] | list[str]) -> None:
    """Refuses directions an imported run has no generator for, in one line.

    Call this before restoring generators of `directions` (`inference.load_run` does): for a
    checkpoint without `g_ba`, `checkpoints.restore_generators` fails with "Found N Python objects
    that were not bound to checkpointed values ... Is config.json the one this run was trained
    with?", which does not say what to do.

    Args:
      run_dir: a run directory.
      directions: the directions about to be loaded (a2b, b2a).

    Raises:
      RunDirError: e.g. "RUN was imported with a2b only (from horse2zebra.pth); it has no b2a
        generator: pass --direction=a2b, or import again with both files (...)."
    """
    available = imported_directions(run_dir)
    missing = [d for d in directions if d not in available]
    if missing:
        sources = (read_imported(run_dir) or {}).get("sources", {})
        names = ", ".join(
            os.path.basename(str(s.get("file", "?"))) for s in sources.values() if hasattr(s, "get")
        )
        other = f"pass --direction={available[0]}, or " if available else ""
        raise RunDirError(
            f"{run_dir} was imported with {'/'.join(available) or 'no direction'} only (from "
            f"{names}); it has no {missing[0]} generator: {other}import again with both files "
            "(--weights=<a2b .pth> --weights_b2a=<b2a .pth>)."
        )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


# -- deciding what a start means -------------------------------------------------------------


NEW, RESUME, OVERWRITE = "new", "resume", "overwrite"


def has_run(run_dir: str) -> bool:
    """Whether `run_dir` holds a run's config.json or checkpoints/ (without judging them)."""
    return os.path.isfile(os.path.join(run_dir, CONFIG_FILE)) or os.path.isdir(
        checkpoint_dir(run_dir)
    )


def check(config: config_lib.Config, run_dir: str, resume: bool, overwrite: bool) -> str:
    """Decides, without writing anything, what starting `config` in `run_dir` means.

    Args:
      config: the run's config; `auto` precision is compatible with any recorded precision.
      run_dir: the output directory (may not exist).
      resume: continue an existing run.
      overwrite: with resume=False, replace an existing run.

    Returns:
      NEW (nothing there yet), RESUME, or OVERWRITE.

    Raises:
      RunDirError: a run exists and neither flag allows using it; the directory holds a foreign
        config.json; the config is incompatible with the saved one.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"--output_dir={run_dir!r} is a file; pass a directory.")
    if not has_run(run_dir):
        return NEW
    saved = read_config(run_dir)  # raises for a foreign config.json, whatever the flags
    if saved is None:
        raise RunDirError(
            f"{run_dir!r} has a {CHECKPOINTS}/ folder but no {CONFIG_FILE}, so it is not a "
            "cyclegan_tf run; choose another --output_dir (nothing in this one is touched)."
        )
    if os.path.isfile(os.path.join(run_dir, IMPORTED_FILE)):  # generators only: nothing to resume
        raise RunDirError(
            f"{run_dir!r} holds generators imported from PyTorch, not a training run to resume or "
            f"overwrite; train a new run from them: --init_from={run_dir} --output_dir=<new dir>."
        )
    if not resume:
        if not overwrite:
            raise RunDirError(
                f"{run_dir!r} already holds a run; re-run with --resume to continue it, "
                "or --overwrite to delete it and start over."
            )
        return OVERWRITE
    if config.train.precision == precision_lib.AUTO:
        config = config.replace(precision=saved.train.precision)
    diffs = config_diff(saved, config)
    if diffs:
        raise RunDirError(
            f"Cannot resume {run_dir!r}: config differs from its {CONFIG_FILE} in "
            f"{'; '.join(diffs)}. Use the original flags, or a new --output_dir."
        )
    return RESUME


def resolve_precision(
    config: config_lib.Config, run_dir: str, resume: bool
) -> tuple[config_lib.Config, str]:
    """The config with a concrete precision, and a phrase saying where it came from.

    `auto` becomes the precision recorded in the run directory when resuming one (a run keeps
    the precision it started with, whatever machine resumes it), else the fastest precision the
    devices compute natively (`precision.resolve`). An explicit precision is kept as given.
    """
    requested = config.train.precision
    if requested != precision_lib.AUTO:
        return config, f"{requested} (asked for)"
    saved = read_config(run_dir) if resume else None
    if saved is not None and saved.train.precision != precision_lib.AUTO:
        return config.replace(precision=saved.train.precision), (
            f"{saved.train.precision} (auto: recorded in the run)"
        )
    resolution = precision_lib.resolve(requested)
    return config.replace(precision=resolution.precision), (
        f"{resolution.precision} ({resolution.reason})"
    )


# -- what the run trains on ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataRecord:
    """What a run trains on: enough to notice a dataset that changed between starts.

    Attributes:
      dataset: the source as given (builtin, tfds:..., a folder).
      num_a, num_b: training images per domain.
      steps_per_epoch: the epoch length the learning-rate schedule uses.
      fingerprint: sha256 of the sorted training image names of both domains.
    """

    dataset: str
    num_a: int
    num_b: int
    steps_per_epoch: int
    fingerprint: str

    @classmethod
    def of(cls, dataset: str, names_a, names_b, steps_per_epoch: int) -> DataRecord:
        digest = hashlib.sha256()
        for domain, names in (("A", names_a), ("B", names_b)):
            for name in names:
                digest.update(f"{domain}/{name}\n".encode())
        return cls(dataset, len(names_a), len(names_b), int(steps_per_epoch), digest.hexdigest())

    def differences(self, other: DataRecord) -> list[str]:
        out = [
            f"{field} {getattr(self, field)} -> {getattr(other, field)}"
            for field in ("num_a", "num_b", "steps_per_epoch")
            if getattr(self, field) != getattr(other, field)
        ]
        if not out and self.fingerprint != other.fingerprint:
            out.append("the image file names changed")
        return out


def check_data(run_dir: str, record: DataRecord, allow_change: bool) -> None:
    """Refuses to resume on data that differs from what the run started with.

    Raises:
      RunDirError: data.json records different images and `allow_change` is False.
    """
    path = os.path.join(run_dir, DATA_RECORD_FILE)
    if allow_change or not os.path.isfile(path):
        return
    with open(path) as f:
        saved = DataRecord(**json.load(f))
    diffs = saved.differences(record)
    if diffs:
        raise RunDirError(
            f"The training data changed since {run_dir!r} started ({'; '.join(diffs)}), which "
            "changes the epoch length and the learning-rate curve; pass --allow_data_change to "
            "resume on it anyway, or train into a new --output_dir."
        )


# -- writing ---------------------------------------------------------------------------------


def create(
    config: config_lib.Config, run_dir: str, mode: str, data_record: DataRecord | None
) -> None:
    """Writes the run's config.json and data.json (after an overwrite removed the old run).

    Call with the lock held (see `lock`) and the model built: `check` decided `mode` earlier.
    """
    os.makedirs(run_dir, exist_ok=True)
    if mode == OVERWRITE:
        remove_artefacts(run_dir)
    _write_json_atomically(os.path.join(run_dir, CONFIG_FILE), config.to_json())
    if data_record is not None:
        _write_json_atomically(
            os.path.join(run_dir, DATA_RECORD_FILE),
            json.dumps(dataclasses.asdict(data_record), indent=2),
        )


def remove_artefacts(run_dir: str) -> list[str]:
    """Deletes what a run wrote into `run_dir` (`ARTEFACTS`) and nothing else; returns the names."""
    removed = []
    for name in ARTEFACTS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def _write_json_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text + ("" if text.endswith("\n") else "\n"))
    os.replace(tmp, path)


@contextlib.contextmanager
def lock(run_dir: str) -> Iterator[None]:
    """Holds the run directory's lock while training writes into it.

    Raises:
      RunDirError: another process holds it (the message names its pid).
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking (documented)
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirError(
                    f"Another cyclegan-tf process (pid {holder}) is training into {run_dir!r}; "
                    "wait for it to finish or stop it, or choose another --output_dir."
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
