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

Before the loop (`STOP`, from the CLI's first line): a worker that simply exits leaves the others
waiting. Before it has joined the cluster's runtime they wait for it to register (TensorFlow's
default: an hour); after, TensorFlow's coordination service notices its missing heartbeats
(~10 s here) and aborts their collectives. So on a worker of a cluster SIGINT/SIGTERM only
request the stop at any moment: every `Agreement` of the start-up carries the request and all
workers stop there together, nothing saved beyond what the run had; the loop's vote carries it
later. Python runs a signal handler only between bytecodes, and a worker may sit in a collective
for long (waiting for the chief's data checks), so a thread learns of each signal through
`signal.set_wakeup_fd`. If the workers have not agreed to stop `GRACE_SECONDS` after the signal
(counted from joining the cluster when it came earlier), or a second signal arrives, this worker
ends at once without saving (`os._exit`: the runtime's teardown could itself wait on the others);
the others then see their collectives aborted and stop with one line (`PeerLost`).

This module imports TensorFlow only inside the functions that need it: the CLI reads the roles
from TF_CONFIG before importing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence

from cyclegan_tf import errors

TF_CONFIG = "TF_CONFIG"


# After a signal, the longest a worker of a cluster waits for all workers to agree to stop; with
# the ~10-15 s TensorFlow's coordination service takes to notice a worker gone, every worker ends
# within a minute.
GRACE_SECONDS = 25.0


class ClusterError(errors.UserError):
    """The workers cannot train together (bad TF_CONFIG, a worker failed, they disagree)."""


class Stopped(Exception):
    """Every worker of the cluster agreed to stop at a start-up `Agreement` (a signal reached
    `signum` on one of them; `by_peer`: not on this one)."""

    def __init__(self, signum: int, by_peer: bool):
        super().__init__(f"stopped by signal {signum}" + (" on another worker" if by_peer else ""))
        self.signum, self.by_peer = signum, by_peer


class PeerLost(ClusterError):
    """Another worker stopped or vanished and the cluster's runtime aborted this worker's
    collectives; `path` is the last checkpoint (None: none yet), `step` its step."""

    def __init__(self, error: BaseException, path: str | None, step: int | None):
        first = (str(error).strip().splitlines() or [""])[0][:200]
        saved = f"the last checkpoint is {path} (step {step})" if path else "nothing was saved"
        super().__init__(
            f"Another worker of the cluster stopped or was lost ({type(error).__name__}: "
            f"{first}); this worker stops too, {saved}. Re-run the same command on every worker "
            "to resume."
        )
        self.path, self.step = path, step


# What a collective raises once the cluster's runtime aborted it (a worker gone).
_ABORTED = ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError")


def peer_lost(error: BaseException, task: Task) -> bool:
    """Whether `error` (raised on `task`) means that the cluster lost a worker."""
    return task.multi_worker and (
        type(error).__name__ in _ABORTED or "Collective ops is aborted" in str(error)
    )


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
    worker that did not fail raises `ClusterError` when another did. A stop requested on any
    worker (`STOP`) travels in the rows too: then every worker raises `Stopped`. Outside a
    cluster nothing is exchanged.

    Args:
      task: this process's `Task`.
      strategy: the strategy whose collectives carry the rows.
      what: what the workers did, for the error message ("open the run").
      keys: the integer values every worker shares, in order.
    """

    def __init__(
        self, task: Task, strategy, what: str, keys: Sequence[str], stoppable: bool = True
    ):
        self.task, self.strategy, self.what, self.keys = task, strategy, what, tuple(keys)
        self.stoppable = stoppable  # False: a stop request waits (the run is complete)
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
        stop = (STOP.signum or 0) if self.stoppable else 0
        own = {"failed": int(exc is not None), "chief": int(self.task.is_chief), "stop": stop}
        own.update(self._values)
        columns = ("failed", "chief", "stop", *self.keys)
        if not self.task.multi_worker:
            self.rows = [own]
            return False
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit: this process stops at once
        if isinstance(exc, Exception) and peer_lost(exc, self.task):
            return False  # the collectives are aborted: no exchange can happen
        self.rows = _exchange(self.strategy, [own[k] for k in columns])
        self.rows = [dict(zip(columns, row)) for row in self.rows]
        if exc is None:
            failed = [i for i, row in enumerate(self.rows) if row["failed"]]
            if failed:
                raise ClusterError(
                    f"Worker {failed[0]} of the cluster could not {self.what} (its output says "
                    "why); this worker stops too. Fix that and start all workers again."
                )
            signums = [row["stop"] for row in self.rows if row["stop"]]
            if signums:
                STOP.agreed()
                raise Stopped(stop or signal.SIGTERM, by_peer=not stop)  # as StopVote's
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


class StopSignals:
    """SIGINT/SIGTERM turned into a request to stop (one per process: `STOP`).

    `handling(in_cluster)` installs it for a block (re-entrant; main thread only; the request is
    forgotten when the outermost block ends). Alone, a first signal sets `signum` (the loop saves
    after the step and stops) and a second raises KeyboardInterrupt. On a worker of a cluster it
    follows the module docstring's "Before the loop": train calls `joined()` once the cluster's
    runtime is up and `agreed()` once all workers agreed to stop.
    """

    def __init__(self):
        self.signum: int | None = None
        self._depth, self._previous, self._in_cluster = 0, {}, False
        self._signals = 0
        self._deadline_from: float | None = None  # the later of the signal and joining
        self._joined = self._agreed = False
        self._watcher: threading.Thread | None = None
        self._done = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1

    @contextlib.contextmanager
    def handling(self, in_cluster: bool):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        if self._depth == 0:
            self._previous = {
                sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        else:
            self._install()
        if in_cluster and not self._in_cluster:
            self._in_cluster = True
            self._start_watcher()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._reset()

    def joined(self) -> None:
        """The cluster's runtime is up: from now on a stop not agreed within GRACE_SECONDS ends
        this worker alone."""
        self._joined = True
        self._install()
        if self.signum is not None and self._deadline_from is None:
            self._deadline_from = time.monotonic()

    def agreed(self) -> None:
        """All workers agreed to stop (they save and end together): no deadline any more."""
        self._agreed = True

    def _install(self) -> None:
        """(Re)installs the handlers inside a block. Needed after the cluster's runtime starts:
        TensorFlow's coordination service installs its own C-level SIGTERM handler (its
        preemption notifier) when MultiWorkerMirroredStrategy is created, and Python's handler
        then never runs (a SIGTERM to a worker was lost; SIGINT was not)."""
        if self._depth and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        if self._in_cluster:
            if self._pipe is None:  # no wakeup descriptor: the handler tells the watcher
                self._on_signal(signum)
            return
        if self.signum is not None:  # a second signal: the user insists
            raise KeyboardInterrupt
        self.signum = signum
        _say(f"\nReceived signal {signum}: saving a checkpoint after this step...")

    def _on_signal(self, signum: int) -> None:
        """A signal on a worker of a cluster (the watcher thread, or the handler as fallback)."""
        self._signals += 1
        if self._signals > 1:
            self._end_now("a second signal")
        self.signum = signum
        if self._joined:
            self._deadline_from = time.monotonic()
        _say(
            f"\nReceived signal {signum}: every worker of the cluster stops at the next step or "
            f"start-up point they all reach (within {GRACE_SECONDS:g} s); a second signal stops "
            "this worker at once."
        )

    def _start_watcher(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        try:
            self._old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
            self._pipe = (read_end, write_end)
        except ValueError:  # not possible here: the handler calls _on_signal itself
            os.close(read_end)
            os.close(write_end)
        self._done.clear()
        self._watcher = threading.Thread(target=self._watch, name="cyclegan_tf-stop", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            if self._pipe is not None:
                ready, _, _ = select.select([self._pipe[0]], [], [], 0.2)
                data = os.read(self._pipe[0], 64) if ready else b""
                for signum in data:
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        self._on_signal(signum)
            else:
                self._done.wait(0.2)
            since = self._deadline_from
            if not self._agreed and since is not None:
                if time.monotonic() - since > GRACE_SECONDS:
                    self._end_now(f"no agreement with the other workers {GRACE_SECONDS:g} s after")

    def _end_now(self, why: str) -> None:
        _say(
            f"cyclegan-tf: {why} signal {self.signum}: this worker stops now without saving "
            "(the run keeps its last checkpoint); the other workers stop when they notice. "
            "Re-run the same command on every worker to resume."
        )
        os._exit(128 + (self.signum or signal.SIGTERM))

    def _reset(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._watcher is not None:
            self._done.set()
            self._watcher.join()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in self._pipe:
                os.close(fd)
        self.__init__()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The process's one StopSignals (signals are per process).
STOP = StopSignals()
