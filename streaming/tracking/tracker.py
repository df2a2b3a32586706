"""Model versions to MLflow, off the learning path.

The learner tells :meth:`Tracker.notify` the versions each checkpoint wrote (a ``put_nowait`` on a bounded
queue: it never waits, whatever MLflow does). One thread takes them, reads each version back from the
registry (its signed snapshot, verified) and logs it (:class:`~streaming.tracking.writer.MlflowWriter`),
then moves the alias ``champion`` of each spec touched to the version Rivulet serves (the champion
pointer's model for a spec with a promotion policy, else the spec's own; its current version, logged first
if ``every`` skipped it). A spec's alias is checked again every ``reconcile_s`` (a promotion or rollback
by hand, ``rivulet models promote``).

MLflow slow or down: the thread retries every ``retry_s`` and the versions wait (at most the ``keep``
newest per model: the registry keeps no older ones). What could not be logged is counted
(:class:`TrackerStats`): ``missed`` versions failed at least once, ``recovered`` of them were logged
since, ``lost`` left the registry first, ``refused`` MLflow will never take (a name or value it
refuses; every version once connecting fails for good, a URI MLflow has no store for or refuses: no
retry), ``dropped`` checkpoints found the queue full (the thread then reads the registry for what it
missed; at start, the thread does so too: what an earlier learner left unlogged). Logging is idempotent (a
version is found again by its key), so a retry never registers twice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streaming.learning.fencing import spec_of
from streaming.learning.registry import NoValidVersion, Registry
from streaming.learning.snapshot import SnapshotRejected
from streaming.learning.spec import ModelSpec
from streaming.logs import get_logger
from streaming.settings import Settings
from streaming.tracking.describe import spec_params
from streaming.tracking.uri import check_uri

__all__ = ["Tracker", "TrackerStats", "http_defaults", "never_connects", "tracker_for"]

log = get_logger("rivulet.mlflow")


@dataclass(frozen=True)
class TrackerStats:
    """What the tracker did so far (see the module docstring)."""

    logged: int = 0
    pending: int = 0
    missed: int = 0
    recovered: int = 0
    lost: int = 0
    refused: int = 0
    dropped: int = 0
    errors: int = 0
    aliases: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Tracker:
    """See the module docstring. ``connect``: builds the writer in the thread (imports MLflow there)."""

    def __init__(
        self,
        registry: Registry,
        specs: Sequence[ModelSpec],
        connect: Callable[[], Any],
        *,
        every: int = 1,
        capacity: int = 10_000,
        retry_s: float = 5.0,
        reconcile_s: float = 30.0,
    ) -> None:
        self.registry, self.connect = registry, connect
        self.specs = {s.name: s for s in specs}
        self.every, self.retry_s, self.reconcile_s = max(1, every), retry_s, reconcile_s
        self._queue: queue.Queue[Mapping[str, int] | None] = queue.Queue(maxsize=max(1, capacity))
        self._todo: dict[str, set[int]] = {}  # model -> versions to log
        self._specs_due: set[str] = set()  # specs whose alias to check
        self._failed: set[tuple[str, int]] = set()
        self._refused: dict[tuple[str, int], None] = {}  # refused once: never sent again (the newest kept)
        self._resync = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(TrackerStats.__dataclass_fields__, 0)
        self._writer: Any = None
        self._params: dict[str, dict[str, str]] = {}
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0
        self._deadline: float | None = None
        self._failing = False
        self._unusable: str | None = None  # why connecting can never work (then nothing more is tried)

    # ------------------------------------------------------------------ the learner's side

    def start(self) -> None:
        """Start the thread; its first round logs what the registry holds and MLflow lacks (versions a
        learner before this one could not log)."""
        if self._thread is None:
            self._resync.set()
            self._thread = threading.Thread(target=self._run, name="rivulet-mlflow", daemon=True)
            self._thread.start()

    def notify(self, saved: Mapping[str, int]) -> None:
        """The versions a checkpoint wrote (model -> version). Never blocks."""
        if not saved:
            return
        with self._lock:
            if self._unusable is not None:  # MLflow can never be reached there: counted, not queued
                self._refuse((n, int(v)) for n, v in saved.items() if self._wanted(n, v))
                return
            try:
                self._queue.put_nowait(dict(saved))
            except queue.Full:
                self._counts["dropped"] += 1
                self._resync.set()

    def stats(self) -> TrackerStats:
        with self._lock:
            counts = dict(self._counts)
            waiting = {(n, v) for n, vs in self._todo.items() for v in vs}
        with self._queue.mutex:  # notified, not taken yet (the thread busy, or waiting on MLflow)
            queued = list(self._queue.queue)
        waiting.update((n, int(v)) for item in queued for n, v in (item or {}).items() if self._wanted(n, v))
        counts["pending"] = len(waiting)
        return TrackerStats(**counts)

    def flush(self, timeout: float) -> bool:
        """Wait (a test, a clean stop) until everything notified is logged or refused; whether it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._unusable is not None:  # nothing will ever be logged: nothing waits either
                return True
            busy = self._queue.unfinished_tasks or self._resync.is_set() or self._todo or self._specs_due
            if not busy:
                return True
            self._stop.wait(0.05)
        return False

    def close(self, flush_s: float = 5.0) -> None:
        """Stop the thread, after at most ``flush_s`` more of trying to log what waits."""
        self._deadline = time.monotonic() + flush_s
        self._stop.set()
        with contextlib.suppress(queue.Full):  # full: it is busy, and sees _stop after this round
            self._queue.put_nowait(None)  # wakes the thread
        if self._thread is not None:
            self._thread.join(flush_s + 1.0)
        while True:  # notified, never taken (the thread held by MLflow until now): waiting too
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            if item:
                self._add(item.items())
        with self._lock:  # what is still waiting was not logged: missed, even if never tried
            for name, versions in self._todo.items():
                for v in versions:
                    if (name, v) not in self._failed:
                        self._failed.add((name, v))
                        self._counts["missed"] += 1
        left = self.stats()
        if left.pending:
            log.warning("mlflow: versions not logged at stop", **left.as_dict())

    # ------------------------------------------------------------------ the thread

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _run(self) -> None:
        taken = 0  # queue items taken since the last success (task_done once their work is done)
        while True:
            try:
                idle = not self._todo and not self._specs_due and not self._resync.is_set()
                taken += self._take(block=idle and not self._stop.is_set())  # the stop's wake-up may be taken
                if self._stop.is_set() and (not self._todo or time.monotonic() >= (self._deadline or 0)):
                    return
                self._work()
            except Exception as exc:  # MLflow (or the registry) unreachable or failing: retried
                self._count("errors")
                if isinstance(exc, _Unusable):
                    self._give_up(exc.__cause__ or exc)
                    return
                with self._lock:
                    for name, versions in self._todo.items():
                        for v in versions:
                            if (name, v) not in self._failed:
                                self._failed.add((name, v))
                                self._counts["missed"] += 1
                if not self._failing:  # said once per outage, not at every retry
                    self._failing = True
                    why = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning("mlflow: logging failed, retried until it succeeds", error=why)
                if not self._stop.wait(self.retry_s):
                    continue
                left = (self._deadline or 0) - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(self.retry_s, left, 0.5))  # stopping: a few more tries until the deadline
                continue
            for _ in range(taken):
                self._queue.task_done()
            taken = 0
            if self._failing:
                self._failing = False
                log.warning("mlflow: logging again", **self.stats().as_dict())

    def _give_up(self, exc: BaseException) -> None:
        """Connecting failed in a way no retry changes (a URI MLflow has no store for, a file store MLflow
        refuses, a database driver not installed): what waits and every later version is counted as
        refused, and the thread ends. Said once."""
        why = f"{type(exc).__name__}: {exc}"[:500]
        with self._lock:
            self._unusable = why
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._queue.task_done()
                for name, version in (item or {}).items():
                    if self._wanted(name, version):
                        self._todo.setdefault(name, set()).add(int(version))
            for name, versions in self._todo.items():
                self._refuse((name, v) for v in versions)
                self._failed.difference_update((name, v) for v in versions)
            self._todo.clear()
            self._specs_due.clear()
        self._resync.clear()
        log.error(
            "mlflow: the tracking URI can never work, nothing is logged (versions counted as refused)",
            error=why,
        )

    def _refuse(self, versions: Iterable[tuple[str, int]]) -> None:
        """Count each version refused once (the lock held)."""
        for each in versions:
            if each not in self._refused:
                self._refused[each] = None
                self._counts["refused"] += 1
        while len(self._refused) > 10_000:
            del self._refused[next(iter(self._refused))]

    def _wanted(self, name: str, version: int) -> bool:
        """Whether ``name`` ``version`` is one to log (its spec's, every Nth)."""
        return spec_of(name) in self.specs and not version % self.every

    def _take(self, *, block: bool) -> int:
        """Move what the learner notified into the thread's work (every Nth version, the newest ``keep``);
        how many queue items were taken."""
        timeout = max(0.05, self.reconcile_s - (time.monotonic() - self._last_reconcile))
        taken = 0
        try:
            item = self._queue.get(timeout=timeout) if block else self._queue.get_nowait()
            taken += 1
        except queue.Empty:
            item = None
            if block:  # time for the aliases again (a version promoted or rolled back by hand)
                self._specs_due.update(self.specs)
        while True:
            if item:
                self._add(item.items())
            try:
                item = self._queue.get_nowait()
                taken += 1
            except queue.Empty:
                break
        if self._resync.is_set():
            for name in self.registry.names():  # Redis failing here: the resync is tried again
                if spec_of(name) in self.specs:
                    self._add((name, v.version) for v in self.registry.versions(name))
            self._resync.clear()
        return taken

    def _add(self, saved: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for name, version in saved:
                spec = self.specs.get(spec_of(name))
                if spec is None:
                    continue
                self._specs_due.add(spec.name)
                if version % self.every:
                    continue
                todo = self._todo.setdefault(name, set())
                todo.add(int(version))
                for old in sorted(todo)[: max(0, len(todo) - spec.checkpoint.keep)]:
                    todo.discard(old)  # the registry keeps no older ones
                    self._counts["lost"] += 1
                    self._failed.discard((name, old))

    def _work(self) -> None:
        if self._writer is None:
            try:
                self._writer = self.connect()
            except Exception as exc:
                if never_connects(exc):
                    raise _Unusable() from exc
                raise
        with self._lock:  # snapshots: a stop adds what it finds queued (close)
            names = sorted(self._todo)
        for name in names:
            with self._lock:
                versions = sorted(self._todo.get(name, ()))
            for version in versions:
                self._log(name, version)
                with self._lock:
                    left = self._todo.get(name)
                    if left is not None:
                        left.discard(version)
                        if not left:
                            del self._todo[name]
        with self._lock:
            specs = sorted(self._specs_due)
        for spec in specs:
            self._alias(spec)
            with self._lock:
                self._specs_due.discard(spec)
        self._last_reconcile = time.monotonic()

    def _done(self, name: str, version: int, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1
            if (name, version) in self._failed:
                self._failed.discard((name, version))
                if outcome == "logged":
                    self._counts["recovered"] += 1

    def _log(self, name: str, version: int) -> str | None:
        """Log one version; its MLflow version, or None when it cannot be (lost, refused: counted)."""
        from streaming.tracking.writer import permanent

        spec = self.specs[spec_of(name)]
        if (name, version) in self._refused:
            return None
        found = self._writer.find(name, version)
        if found is not None:
            return str(found)
        try:
            opened = self.registry.load(name, version)
        except (NoValidVersion, SnapshotRejected) as exc:
            log.warning(
                "mlflow: version no longer in the registry", model=name, version=version, why=str(exc)
            )
            self._done(name, version, "lost")
            return None
        if spec.name not in self._params:
            self._params[spec.name] = spec_params(spec)
        try:
            mv = self._writer.log(spec.name, opened.header, opened.state, self._params[spec.name])
        except Exception as exc:
            if not permanent(exc):
                raise
            log.error("mlflow refused a version", model=name, version=version, error=str(exc)[:500])
            self._refused[(name, version)] = None
            while len(self._refused) > 10_000:
                del self._refused[next(iter(self._refused))]
            self._done(name, version, "refused")
            return None
        self._done(name, version, "logged")
        return str(mv)

    def _alias(self, spec_name: str) -> None:
        """``champion`` on the version Rivulet serves for ``spec_name``."""
        from streaming.tracking.writer import permanent

        spec = self.specs[spec_name]
        served = spec.name
        if spec.promotion is not None:
            served = self.registry.champion(spec.name) or spec.name
            if spec_of(served) != spec.name:  # a pointer that is not one of this spec's models
                return
        version = self.registry.current_version(served)
        if version is None:
            return
        mv = self._log(served, version)
        if mv is None:
            return
        try:
            if self._writer.alias(spec.name, mv):
                self._count("aliases")
                log.info("mlflow: champion moved", spec=spec.name, model=served, version=version, mlflow=mv)
        except Exception as exc:
            if not permanent(exc):
                raise
            log.error("mlflow refused the alias", spec=spec.name, error=str(exc)[:500])


class _Unusable(Exception):
    """Connecting failed for good (the cause says why)."""


def never_connects(exc: BaseException) -> bool:
    """A failure to connect that no retry changes: a URI refused (:func:`check_uri`, or MLflow's
    ``INVALID_PARAMETER_VALUE``: no store for it, a file store refused) or a module missing (a database
    driver). A database that fails (locked, unreachable) is retried."""
    if isinstance(exc, ValueError | ImportError):
        return True
    return getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"


def http_defaults(settings: Settings) -> None:
    """The MLflow client's HTTP requests: our timeout, and no retries of its own (its default backs off for
    minutes per call; the tracker retries). Set unless the environment already says."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, settings.mlflow_timeout_s))))


def tracker_for(settings: Settings, registry: Registry, specs: Sequence[ModelSpec]) -> Tracker | None:
    """The tracker the settings ask for (None: ``mlflow_tracking_uri`` unset)."""
    uri = settings.mlflow_tracking_uri
    if not uri:
        return None
    if importlib.util.find_spec("mlflow") is None:
        log.error(
            "RIVULET_MLFLOW_TRACKING_URI is set but MLflow is not installed (pip install 'rivulet[mlflow]')"
        )
        return None
    s = settings

    def connect() -> Any:
        check_uri(uri)  # settings built without validation (model_copy): refused here, not retried
        if s.mlflow_registry_uri:
            check_uri(s.mlflow_registry_uri, registry=True)
        http_defaults(s)
        from streaming.tracking.writer import MlflowWriter

        return MlflowWriter(uri, s.mlflow_registry_uri, s.mlflow_experiment, s.mlflow_artifact_location)

    return Tracker(
        registry,
        specs,
        connect,
        every=s.mlflow_every,
        capacity=s.mlflow_queue,
        retry_s=s.mlflow_retry_s,
        reconcile_s=s.mlflow_reconcile_s,
    )
