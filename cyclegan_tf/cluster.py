"""The multi-worker cluster: which worker is the chief, and how the workers agree.

Under `--strategy=multi_worker` (`tf.distribute.MultiWorkerMirroredStrategy`, the cluster read
from the `TF_CONFIG` environment variable) every worker runs the same `cyclegan-tf train`
command. Roles follow tf.distribute's convention: the chief is the task of type `chief`, or
`worker` 0 when the cluster has no `chief` job. Only the chief judges and writes the run
directory; every worker trains, saves (saving is collective: the others write to temporary
directories they delete, see `checkpoints.Checkpointer`) and reads its own shard of each batch
(`data.Unpaired.train(input_context=...)`).

Agreement. A worker that skips a collective leaves the others waiting in it, so a step that one
worker may fail alone (opening the run, restoring a checkpoint) ends with an `Agreement` that
every worker reaches, failed or not: each contributes a row of integers, all see all rows, and
all stop together when one failed (that worker re-raises its own error, the others say which
worker failed). The chief's row carries its decisions (what the start means, the precision,
which checkpoint to restore) to the others.

Stopping. A signal reaches one worker, but all must save at the same step. Each step carries the
worker's stop request into the train step, where it is summed over all replicas next to the
losses (`trainer.STOP_KEY`); the loop reads the agreed value of the PREVIOUS step after
dispatching the next one (`StopVote`), so the device always has a step queued and every worker
stops after the same step. `tf.distribute.experimental.PreemptionCheckpointHandler` does this
through the coordination service, but it is a no-op on CPU VMs in Google Cloud (Vertex AI CPU
workers among them), probes the GCE metadata server at start, adds a variable to the checkpoint
and saves without the loop's NaN check; this costs one scalar all-reduce per step instead.

This module imports TensorFlow only inside the functions that need it: the CLI reads the roles
from TF_CONFIG before importing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

from cyclegan_tf import errors

TF_CONFIG = "TF_CONFIG"


class ClusterError(errors.UserError):
    """The workers cannot train together (bad TF_CONFIG, a worker failed, they disagree)."""


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster.

    Attributes:
      task_type: "chief" or "worker" (None outside a cluster).
      task_id: the index within its type.
      num_workers: processes that train together (chief included); 1 outside a cluster.
      has_chief_job: the cluster has a `chief` job (else worker 0 is the chief).
    """

    task_type: str | None = None
    task_id: int = 0
    num_workers: int = 1
    has_chief_job: bool = False

    @property
    def is_chief(self) -> bool:
        if self.num_workers == 1 or self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and not self.has_chief_job

    @property
    def multi_worker(self) -> bool:
        return self.num_workers > 1

    def describe(self) -> str:
        """'worker 1 of 2' / 'chief (worker 0 of 2)' / 'a single worker'."""
        if not self.multi_worker:
            return "a single worker"
        role = f"{self.task_type} {self.task_id} of {self.num_workers}"
        return f"the chief ({role})" if self.is_chief else role

    @classmethod
    def of(cls, strategy) -> Task:
        """The task of a `tf.distribute.Strategy` (a single worker unless it has a cluster)."""
        resolver = getattr(strategy, "cluster_resolver", None)
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        if not spec:
            return cls()
        return cls._from_spec(spec, resolver.task_type, resolver.task_id)

    @classmethod
    def from_environment(cls, strategy_name: str) -> Task:
        """The task TF_CONFIG describes for `strategy_name` (pure Python, for the CLI).

        Raises:
          ClusterError: strategy multi_worker with a TF_CONFIG that is missing or malformed.
        """
        if strategy_name != "multi_worker":
            return cls()
        text = os.environ.get(TF_CONFIG, "")
        try:
            tf_config = json.loads(text)
            spec, task = tf_config["cluster"], tf_config.get("task", {})
            task_type, task_id = task.get("type"), int(task.get("index", 0))
            if not isinstance(spec, dict) or task_type not in spec:
                raise ValueError(f"task type {task_type!r} is not a job of the cluster")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reason = "it is not set" if not text else f"{type(e).__name__}: {e}"
            raise ClusterError(
                f"strategy=multi_worker needs {TF_CONFIG} to describe the cluster and this task "
                f'({reason}), e.g. {TF_CONFIG}=\'{{"cluster": {{"worker": ["host1:12345", '
                f'"host2:12345"]}}, "task": {{"type": "worker", "index": 0}}}}\'.'
            ) from None
        return cls._from_spec(spec, task_type, task_id)

    @classmethod
    def _from_spec(cls, spec: dict, task_type: str | None, task_id: int | None) -> Task:
        workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
        return cls(task_type, int(task_id or 0), max(workers, 1), "chief" in spec)


def digest(text: str) -> int:
    """A non-negative int64 fingerprint of `text`, for comparing values across workers."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


class Agreement:
    """A context manager every worker passes through together (see the module docstring).

    Inside, a worker sets `share(**values)` (integers, the same keys on every worker); on exit all
    workers exchange their rows. Afterwards `chief[key]` is the chief's value and `rows` every
    worker's. An exception inside is still exchanged (as a failed row) before it propagates; a
    worker that did not fail raises `ClusterError` when another did. Outside a cluster nothing is
    exchanged.

    Args:
      task: this process's `Task`.
      strategy: the strategy whose collectives carry the rows.
      what: what the workers did, for the error message ("open the run").
      keys: the integer values every worker shares, in order.
    """

    def __init__(self, task: Task, strategy, what: str, keys: Sequence[str]):
        self.task, self.strategy, self.what, self.keys = task, strategy, what, tuple(keys)
        self._values = dict.fromkeys(self.keys, 0)
        self.rows: list[dict[str, int]] = []

    def share(self, **values: int) -> None:
        unknown = set(values) - set(self.keys)
        if unknown:
            raise ValueError(f"Agreement {self.what!r} has no keys {sorted(unknown)}")
        self._values.update({k: int(v) for k, v in values.items()})

    @property
    def chief(self) -> dict[str, int]:
        return next(row for row in self.rows if row["chief"])

    def __enter__(self) -> Agreement:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        own = {"failed": int(exc is not None), "chief": int(self.task.is_chief), **self._values}
        if not self.task.multi_worker:
            self.rows = [own]
            return False
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit: this process stops at once
        self.rows = _exchange(self.strategy, [own[k] for k in ("failed", "chief", *self.keys)])
        self.rows = [dict(zip(("failed", "chief", *self.keys), row)) for row in self.rows]
        if exc is None:
            failed = [i for i, row in enumerate(self.rows) if row["failed"]]
            if failed:
                raise ClusterError(
                    f"Worker {failed[0]} of the cluster could not {self.what} (its output says "
                    "why); this worker stops too. Fix that and start all workers again."
                )
        return False


def _exchange(strategy, row: list[int]) -> list[list[int]]:
    """Every worker's `row` (one per worker, in replica order), gathered across the cluster."""
    import tensorflow as tf

    values = tf.constant([row], tf.int64)

    @tf.function(autograph=False)
    def gather():
        per_replica = strategy.run(lambda: tf.identity(values))
        return strategy.gather(per_replica, axis=0)

    rows = gather().numpy().tolist()
    per_worker = len(rows) // max(1, _num_workers(strategy))
    return rows[::per_worker]  # the first replica of each worker


def _num_workers(strategy) -> int:
    return Task.of(strategy).num_workers


class StopVote:
    """The whole cluster's decision to stop, from one worker's signal (see the module docstring).

    Outside a cluster it is the local flag itself. In a cluster: `inputs(local)` is what the next
    train step takes, and `after_step(outputs)` pops the step's agreed flag from its outputs and
    says whether the PREVIOUS step's agreed flag asks to stop, reading a step that has finished
    while the next one is queued.
    """

    def __init__(self, task: Task, stop_key: str):
        self.enabled, self.stop_key = task.multi_worker, stop_key
        self._previous = None

    def inputs(self, local: bool) -> tuple:
        if not self.enabled:
            return ()
        import tensorflow as tf

        return (tf.constant(1.0 if local else 0.0, tf.float32),)

    def after_step(self, outputs: dict, local: bool) -> bool:
        if not self.enabled:
            return local
        previous, self._previous = self._previous, outputs.pop(self.stop_key)
        return previous is not None and float(previous) > 0
