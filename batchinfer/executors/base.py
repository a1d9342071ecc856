"""The executor contract: what every backend (``local``, ``ray``) does for the scheduler, and why; and
the registry that makes the spec's backend's executor.

The scheduler (``scheduler.py``) hands mini-batch *descriptors* to an :class:`Executor` and gets
back one :class:`~batchinfer.protocol.Outcome` per try; the executor runs the entry script in its
workers (each wraps a :class:`batchinfer.worker.ScriptRuntime`) and knows nothing else. Its duties:

1. **Exactly one Outcome per try, ever.** The scheduler counts tries, retries, commits rows and
   writes the journal from outcomes alone: a lost outcome leaves a mini-batch in flight forever (the
   job never ends), a second one would count a try twice or commit its rows twice.
2. **It enforces ``run_invocation_timeout``.** Only the executor can stop what runs the script (a
   ``run()`` holding the GIL cannot be interrupted from inside): past the timeout it kills the
   worker, replaces it when there is work, and reports the try as kind ``timeout`` (the scheduler
   retries it). An ``init()`` past the timeout is an ``init()`` failure (duty 4).
3. **Queued mini-batches of a dead or retired worker go to other workers untried; only the running
   one is a failed try (kind ``worker_died``).** The queued ones never ran: charging them a try
   would let one crashing input use up ``run_max_try`` of innocent mini-batches and split them
   needlessly. A worker retires after a try that ends it (``out_of_memory``, ``worker_died`` from
   ``sys.exit()``: see ``worker.py``), with that try reported by the worker itself.
4. **An ``init()`` that fails (raises, exits, dies, hangs) requeues the worker's mini-batches
   untried and the worker is replaced; when ``init()`` keeps failing, 3 x (most workers alive at
   once) times in a row with no success between, ``poll`` raises**
   :class:`~batchinfer.errors.JobFailedError` (exit 1, ``init()``'s own message). One flaky start
   (a download failing once) must not end a job; a script whose ``init()`` cannot work must, rather
   than replace workers forever. The mini-batches never ran, so they lose no try.
5. **Workers start on demand, never more than there are mini-batches.** ``init()`` may load a
   large model: a job of three mini-batches must not pay for 64 starts. ``started`` counts every
   worker started, replacements included (the summary's ``workers_started``), and ``on_ready`` is
   called with each worker's :class:`~batchinfer.protocol.Ready` (init time, memory).
6. **``stop()`` lets ``shutdown()`` run** in every worker, then ends what is left: scripts flush
   and close their own files there, as on Azure ML.
7. **``kill_all()`` leaves nothing running (what the scripts started included) and nothing is
   reported after it.** It is called on Ctrl-C, SIGTERM, a threshold or an error: the journal is
   closed, so nothing a worker would still return may be committed; a process left behind would hold
   a GPU, memory or the output folder's files for the next run.
8. **Nothing outlives the coordinator**, even SIGKILLed, when no Python code runs to clean up: the
   workers die with it (the kernel's parent-death signal locally; the Ray driver's death on Ray), so
   that a rerun resumes on a free machine or cluster and no row is written by a forgotten worker.
9. **It knows nothing of thresholds, retries, ordering or output.** Those are the scheduler's, the
   same code for every backend, so exactly-once output, resume and formats behave identically.

``start()`` may raise a :class:`~batchinfer.errors.BatchInferError` (exit 2) for what the user must
fix before anything runs (a cluster with too few nodes). After it, ``count`` is the job's worker count
(the summary's ``workers``): ``spec.worker_count`` locally, but on Ray without ``process_count_per_node``
what the nodes hold, known only once the cluster is reached. An executor may also set ``notes``: lines
for the user when the job starts (see :func:`notes_of`).

The registry imports a backend only when a job uses it: the local backend never imports Ray, and a
missing Ray, or one that fails to import, is one line, exit 2, naming ``pip install 'batchinfer[ray]'``
(:func:`check_backend`, :func:`executor_class`). What a backend's ``prepare`` holds (Ray: our own
instance and its guardian) is given back by :func:`release` however the run ends (:func:`released`):
a run that fails before an executor takes over must not leave a Ray instance in the caller's process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from batchinfer.errors import BackendUnavailableError
from batchinfer.protocol import MiniBatch, Outcome, Ready, WorkerConfig

if TYPE_CHECKING:
    from batchinfer.spec import JobSpec

# Queued mini-batches per worker behind the running one: enough to hide the round trip to the
# coordinator (about QUEUE_S seconds of work), at most MAX_PREFETCH so that little is stranded on a
# dead worker and the last mini-batches still spread over all workers (both executors)
MIN_PREFETCH = 1
MAX_PREFETCH = 32
QUEUE_S = 0.01

# backend -> "module:class", imported when a job uses it
BACKENDS = {
    "local": "batchinfer.executors.local:LocalExecutor",
    "ray": "batchinfer.executors.ray:RayExecutor",
}
# backend -> (the package it needs, the extra that installs it)
NEEDS = {"ray": ("ray", "ray")}
# backend -> "module:function(spec)" raising what the backend refuses in a spec that needs no cluster
# to know (the module must not import the backend's package: validate and plan run it too)
SPEC_CHECKS = {"ray": "batchinfer.executors.ray_paths:check_paths"}
# backend -> "module:function()" giving back what ``prepare`` (or an executor) holds in this process;
# called only when that module was imported (else nothing was prepared), and harmless when called twice
RELEASES = {"ray": "batchinfer.executors.ray_session:close_session"}


class Executor(Protocol):
    """What the scheduler and ``job.py`` use of a backend, nothing more (see the module docstring)."""

    started: int  # workers started so far, replacements included
    count: int  # most workers alive at once: the job's worker count (summary, job.log), final after start()

    def start(self) -> None:
        """Before the first submit; may raise a BatchInferError (exit 2), e.g. too few nodes."""

    def free_slots(self) -> int:
        """How many more mini-batches the executor takes now (the scheduler's backpressure)."""

    def submit(self, batch: MiniBatch) -> None:
        """Run ``batch`` (call only when ``free_slots()`` > 0)."""

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` seconds for outcomes: one per try, ever."""

    @property
    def busy(self) -> int:
        """Workers running a mini-batch now."""

    def stop(self) -> None:
        """Graceful end: ``shutdown()`` runs in each worker, then what is left is killed."""

    def kill_all(self) -> None:
        """At once, everything the workers started included; nothing is reported afterwards."""


class PrefetchDepth:
    """How many mini-batches a worker holds queued behind the one it runs: about ``QUEUE_S`` seconds
    of work, judged from a running mean of recent ``run()`` times, between ``MIN_PREFETCH`` and
    ``MAX_PREFETCH``. One queued mini-batch when they are slow; many when they take microseconds, so
    the round trip to the coordinator (a pipe, a Ray call) is paid once per several of them."""

    def __init__(self) -> None:
        self.depth = MIN_PREFETCH
        self._mean_s: float | None = None

    def update(self, outcomes: list[Outcome]) -> int:
        """The depth after these outcomes (only successful tries count: a failure's time says little)."""
        for outcome in outcomes:
            if outcome.ok:
                mean = self._mean_s
                self._mean_s = outcome.seconds if mean is None else 0.9 * mean + 0.1 * outcome.seconds
        if self._mean_s is not None:
            wanted = int(QUEUE_S / max(self._mean_s, 1e-6))
            self.depth = max(MIN_PREFETCH, min(MAX_PREFETCH, wanted))
        return self.depth


def check_backend(spec: JobSpec) -> None:
    """Raise :class:`BackendUnavailableError` (one line, exit 2) when the spec's backend needs a
    package that is not installed or fails to import, then the backend's own spec check
    (``SPEC_CHECKS``: e.g. local-only paths on several Ray nodes); for run, validate and plan alike."""
    need = NEEDS.get(spec.backend)
    if need is not None:
        package, extra = need
        if not _installed(package):
            raise BackendUnavailableError(
                f"backend '{spec.backend}' needs the {package} package, which is not installed",
                hint=f"pip install 'batchinfer[{extra}]', or use backend: local",
            )
        _import_or_explain(spec.backend, package, extra)  # through the backend's module: it sets Ray's env first
    if spec.backend in SPEC_CHECKS:
        module, _, name = SPEC_CHECKS[spec.backend].partition(":")
        getattr(importlib.import_module(module), name)(spec)


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported; a folder of that name in the working directory (Ray's own
    session folder /tmp/ray, when batchinfer runs in /tmp) is a namespace package, not the package."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    return found is not None and found.origin is not None


def _import_or_explain(backend: str, package: str, extra: str) -> None:
    """Import the backend's module, and with it ``package`` (once per process; Ray: ~0.6 s): a package
    installed but broken (a library missing, a version that does not fit) is one line naming the
    error's first line, not a traceback."""
    module = BACKENDS[backend].partition(":")[0]
    if module in sys.modules:
        return
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError mostly, but a broken package may raise anything
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        shown = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise BackendUnavailableError(
            f"backend '{backend}': import {package} failed: {shown}",
            hint=f"reinstall it with pip install 'batchinfer[{extra}]', or use backend: local",
        ) from None


def executor_class(spec: JobSpec) -> Any:
    """The executor class of the spec's backend, imported now (after :func:`check_backend`)."""
    check_backend(spec)
    module, _, name = BACKENDS[spec.backend].partition(":")
    return getattr(importlib.import_module(module), name)


def prepare(spec: JobSpec) -> None:
    """What the backend does first in a run, before the coordinator's own checks, so the two overlap
    (the local backend starts its fork server); a backend without a ``prepare`` does nothing."""
    cls = executor_class(spec)
    if hasattr(cls, "prepare"):
        cls.prepare(spec)


def release(spec: JobSpec) -> None:
    """Give back what the backend's ``prepare`` (or its executor) holds in this process (Ray: leave
    the cluster, stop our own instance and its guardian); nothing if the backend was never imported."""
    target = RELEASES.get(spec.backend)
    if target is None:
        return
    module, _, name = target.partition(":")
    if module in sys.modules:  # not imported: nothing was prepared (and importing it may fail)
        getattr(sys.modules[module], name)()


@contextlib.contextmanager
def released(spec: JobSpec) -> Iterator[None]:
    """:func:`release` when the block (which calls :func:`prepare`) ends, however it ends: an error,
    a signal, a job already complete; after an executor's own ``stop()``/``kill_all()`` it does nothing."""
    try:
        yield
    finally:
        release(spec)


def make_executor(spec: JobSpec, config: WorkerConfig, on_ready: Callable[[Ready], None]) -> Executor:
    """The executor of the spec's backend: ``<Class>.from_spec(spec, config, on_ready)``."""
    return executor_class(spec).from_spec(spec, config, on_ready)


def notes_of(executor: Executor) -> list[str]:
    """Lines for the user when the job starts (e.g. far more workers than cores), if the executor has any."""
    return list(getattr(executor, "notes", ()))
