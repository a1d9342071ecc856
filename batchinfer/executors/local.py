"""Worker processes that batchinfer starts, watches, kills and replaces itself (backend ``local``).

It keeps the executor contract of ``executors/base.py``; each worker process runs
``executors/local_worker.py`` around the script's runtime (``worker.py``).

Data flow (one coordinator, N worker processes, one duplex pipe each):

    scheduler --submit(MiniBatch)--> LocalExecutor --pipe--> worker i (init once, run per batch)
    scheduler <--poll(): [Outcome]-- LocalExecutor <--pipe-- worker i
                                      |  waits on every pipe *and* every process sentinel at once,
                                      |  so a dead worker is seen at once; a watchdog kills a
                                      |  worker whose run() or init() outlives the timeout.

Each worker holds the mini-batch it runs plus a few queued behind it, already in
its pipe, so it never waits for the coordinator between two mini-batches: one
when mini-batches are slow, more (up to ``MAX_PREFETCH``, about ``QUEUE_S``
seconds of work) when they take microseconds, so that the pipe round trip is
paid once per several mini-batches. Mini-batches given to one worker in one
round go in one message. A worker that dies loses only the mini-batch it was
running (reported as a failed try); the queued ones go to other workers untried.

Workers start on demand (a submission that finds no idle worker starts one, up to
the count), so a job never has more workers than mini-batches; a worker that died,
timed out or ran out of memory is replaced the same way, when there is work for it.

Processes, and why none outlives the job (Linux):

    coordinator (child subreaper) --+-- fork server (PDEATHSIG SIGTERM: kills all below it, then exits)
                                    |     +-- worker i (PDEATHSIG: dies with the fork server)
                                    |           +-- what the script starts (killed with its worker, or
                                    |               by the fork server when the coordinator died)
                                    +-- resource tracker (exits when the last worker does)
                                    +-- adopted orphans: a worker's double-forked children
                                        (killed by kill_all() when the job ends)

The fork server and the resource tracker never hold the command's stdout or stderr.

Unlike ``concurrent.futures.ProcessPoolExecutor``, one dead worker never breaks the pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from batchinfer.errors import JobFailedError
from batchinfer.executors import owns_process
from batchinfer.executors.base import PrefetchDepth
from batchinfer.executors.local_worker import worker_main
from batchinfer.inputs import MiniBatch
from batchinfer.protocol import OUT_OF_MEMORY, TIMEOUT, WORKER_DIED, InitFailed, Outcome, Ready, WorkerConfig

STACK_DUMP_WAIT_S = 0.3
STOP_WAIT_S = 10.0
OVERSUBSCRIBED = 4  # workers per core above which the count is worth a warning

log = logging.getLogger("batchinfer.executor")


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where available: workers start fast and clean (TensorFlow is not fork-safe)."""
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        # batchinfer._forkserver first: it ties the server's life to the coordinator's
        ctx.set_forkserver_preload(["batchinfer._forkserver", "batchinfer.executors.local_worker"])
        return ctx
    return multiprocessing.get_context("spawn")


_adopting = False  # this process is a child subreaper: its workers' orphaned children come back to it


# An AF_UNIX socket path holds at most 107 bytes; multiprocessing puts the fork server's socket in
# a folder under TMPDIR (pymp-XXXX/listener-XXXX: about 40 bytes more)
_SOCKET_DIR_MAX = 60


def _short_socket_dir() -> None:
    """Under a long TMPDIR, give multiprocessing a temporary folder in /tmp for its sockets: the fork
    server could not bind its socket there (``AF_UNIX path too long``), and the job would not start."""
    import multiprocessing.util as util
    import shutil
    import tempfile

    config = multiprocessing.current_process()._config
    if len(tempfile.gettempdir()) <= _SOCKET_DIR_MAX or config.get("tempdir") or not os.path.isdir("/tmp"):
        return
    folder = tempfile.mkdtemp(prefix="pymp-", dir="/tmp")
    # removed at exit as multiprocessing removes its own (util.get_temp_dir does the same)
    util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
    config["tempdir"] = folder


def warm_up() -> None:
    """Prepare this process to be a coordinator, and start the fork server now.

    - The coordinator becomes a child subreaper (Linux), when it is the ``batchinfer`` command
      (see :func:`batchinfer.executors.own_process`): a process that a worker's child leaves
      behind (a double-forked daemon) is re-parented to the coordinator instead of init, so that
      :meth:`LocalExecutor.kill_all` finds and kills it when the job ends.
    - The fork server and the resource tracker are started with stdout and stderr on
      /dev/null: multiprocessing starts them with the coordinator's, and they live as long
      as any process holding their pipes (a worker's grandchild may), which kept a reader
      of ``batchinfer run ... | cat`` waiting for an EOF.
    - The fork server dies with the coordinator (see ``batchinfer/_forkserver.py``).

    Starting the server costs a Python start and an import of the worker module (~0.2 s);
    done here, it overlaps the coordinator's own checks.
    """
    global _adopting
    if _context().get_start_method() != "forkserver":
        return
    import multiprocessing.forkserver

    from batchinfer._forkserver import ARM_ENV

    _adopting = _adopting or (owns_process() and _prctl(PR_SET_CHILD_SUBREAPER, 1))
    _short_socket_dir()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when the descriptor was closed
            stream.flush()
    saved = {fd: _dup_high(fd) for fd in (1, 2)}  # None: closed (batchinfer run >&-), and so it stays
    low = os.open(os.devnull, os.O_WRONLY)  # 1 or 2 when one of them is closed
    null = _dup_high(low)
    os.close(low)
    os.environ[ARM_ENV] = str(os.getpid())
    try:  # nothing else runs in the coordinator meanwhile: its own output is not lost
        for fd in saved:
            os.dup2(null, fd)
        multiprocessing.forkserver.ensure_running()  # starts the resource tracker first
    finally:
        os.environ.pop(ARM_ENV, None)
        for fd, copy in saved.items():
            if copy is None:
                os.close(fd)
            else:
                os.dup2(copy, fd)
                os.close(copy)
        os.close(null)


def _dup_high(fd: int) -> int | None:
    """A copy of ``fd`` numbered 3 or above (never 1 or 2, even when they are closed); None if ``fd`` is closed."""
    import fcntl  # only called where the fork server exists (Linux)

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return None


PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _helper_pids() -> set[int]:
    """multiprocessing's own helper processes (children of the coordinator that are not adopted)."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    return {pid for pid in pids if pid}


def reap_adopted() -> None:
    """Collect the exit status of adopted processes that ended (so they do not stay zombies).

    Only pids that are not multiprocessing's helpers are waited for (by pid, so nobody
    else's status is taken); the coordinator starts no other child processes itself.
    """
    if not _adopting:
        return
    while True:  # one system call per poll when nothing ended
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in _helper_pids():
            return
        try:
            os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            return


def kill_adopted(wait_s: float = 5.0) -> None:
    """Kill whatever the workers left behind that was re-parented to the coordinator, and reap it."""
    if not _adopting:
        return
    helpers = _helper_pids()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            adopted = [p for p in psutil.Process().children() if p.pid not in helpers]
        except psutil.Error:
            return
        if not adopted:
            return
        for proc in adopted:
            kill_tree(proc.pid)  # a dying process's own children come back to us: loop
        for proc in adopted:
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass


def oversubscription_warning(count: int, cores: int | None = None) -> str | None:
    """A warning when the worker count is far above the number of cores (more than 4x)."""
    cores = cores or os.cpu_count() or 1
    if count > OVERSUBSCRIBED * cores:
        return (f"warning: {count} worker processes on {cores} cores (at most as many as there are "
                f"mini-batches are started; lower process_count_per_node unless run() mostly waits)")
    return None


def describe_exit(code: int | None) -> str:
    """An exit code in words: ``killed by SIGKILL (-9)``, ``exit code 3``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} ({code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started."""
    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@dataclass
class _Slot:
    """One worker process and what it was given."""

    index: int
    process: Any
    conn: Any
    started_at: float
    ready_at: float | None = None
    assigned: deque = field(default_factory=deque)  # (MiniBatch, sent_at)
    head_started: float | None = None  # when the running mini-batch (assigned[0]) started
    broken: bool = False  # its pipe is closed: it died, and its sentinel will say so
    outbox: list = field(default_factory=list)  # assigned this round, sent together by flush()
    poller: Any = None  # a select.poll() on its pipe, made on first use

    def room(self, prefetch: int) -> int:
        """How many more mini-batches this worker takes now."""
        return 0 if self.broken else 1 + prefetch - len(self.assigned)

    def run_deadline(self, timeout: float) -> float:
        """When the current run() (or init()) times out."""
        if self.ready_at is None:
            return self.started_at + timeout
        if self.assigned and self.head_started is not None:
            return self.head_started + timeout
        return float("inf")


class LocalExecutor:
    """A pool of worker processes on this machine; knows nothing of thresholds or output."""

    def __init__(
        self,
        config: WorkerConfig,
        count: int,
        timeout: float,
        on_ready: Callable[[Ready], None] | None = None,
    ) -> None:
        self.config = config
        self.count = count
        self.timeout = timeout
        self.on_ready = on_ready
        self.slots: dict[int, _Slot] = {}
        self.started = 0  # worker processes started so far (replacements included)
        self.peak = 0  # most workers alive at once
        self.orphans: deque[MiniBatch] = deque()  # queued on a dead worker, never started
        self.init_failures_in_a_row = 0
        self._depth = PrefetchDepth()
        self.prefetch = self._depth.depth
        self._selector = selectors.DefaultSelector()
        self._ctx = _context()
        self.notes: list[str] = []  # for the user when the job starts (see executors/base.py)

    @classmethod
    def from_spec(cls, spec: Any, config: WorkerConfig, on_ready: Callable[[Ready], None] | None = None) -> LocalExecutor:
        """``node_count`` x ``process_count_per_node`` workers on this machine (the registry's constructor)."""
        executor = cls(config, spec.worker_count, spec.run_invocation_timeout, on_ready)
        if warning := oversubscription_warning(spec.worker_count):
            executor.notes.append(warning)
        return executor

    @staticmethod
    def prepare(_spec: Any) -> None:
        """Start the fork server now, overlapping the coordinator's own checks (see :func:`warm_up`)."""
        warm_up()

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Nothing to start yet: workers start on demand, as mini-batches are submitted.

        A submission that finds no idle worker starts one more, up to ``count``: a job
        of 6 mini-batches starts at most 6 workers whatever the count, and a job of
        many starts them all at once (their init() runs in parallel). A worker that dies
        or is retired is replaced the same way, when there is work for it.
        """

    def _spawn(self) -> _Slot:
        index = min(set(range(len(self.slots) + 1)) - set(self.slots))  # reuse the lowest free number
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(index, child, self.config, f"worker-{index}.log"),
            name=f"batchinfer-worker-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        slot = self.slots[index] = _Slot(index, process, parent, time.monotonic())
        self.started += 1
        self.peak = max(self.peak, len(self.slots))
        # one selector for the whole run: a worker's pipe and its exit are watched together
        self._selector.register(parent, selectors.EVENT_READ, ("pipe", slot))
        self._selector.register(process.sentinel, selectors.EVENT_READ, ("exit", slot))
        log.debug("worker %d started (pid %s)", index, process.pid)
        return slot

    def stop(self) -> None:
        """Ask every worker to finish (shutdown() runs), then kill what is left."""
        for slot in self.slots.values():
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        for slot in self.slots.values():
            slot.process.join(max(0.0, deadline - time.monotonic()))
        self.kill_all()

    def kill_all(self) -> None:
        """Kill every worker at once, and whatever they started (even what outlived them)."""
        for slot in list(self.slots.values()):
            self._forget(slot)
            if slot.process.is_alive():
                kill_tree(slot.process.pid)
            slot.process.join(1)
            slot.conn.close()
        self.slots.clear()
        kill_adopted()

    @property
    def busy(self) -> int:
        """Workers running a mini-batch now."""
        return sum(1 for s in self.slots.values() if s.assigned and s.ready_at is not None)

    # ------------------------------------------------------------- dispatch

    def free_slots(self) -> int:
        """How many more mini-batches the pool takes now, counting workers not started yet (orphans go first)."""
        room = sum(s.room(self.prefetch) for s in self.slots.values())
        room += (self.count - len(self.slots)) * (1 + self.prefetch)
        return max(0, room - len(self.orphans))

    def submit(self, batch: MiniBatch) -> None:
        """Give ``batch`` to the least loaded worker (call only when ``free_slots()`` > 0)."""
        self._send(batch)

    def _send(self, batch: MiniBatch) -> None:
        """Assign to the least loaded worker; :meth:`_flush_outboxes` sends it."""
        open_slots = [s for s in self.slots.values() if s.room(self.prefetch) > 0]
        idle = any(not s.assigned and not s.broken for s in self.slots.values())
        if not idle and len(self.slots) < self.count:
            slot = self._spawn()  # no idle worker: one more, for this mini-batch
        elif not open_slots:
            self.orphans.appendleft(batch)
            return
        else:
            slot = min(open_slots, key=lambda s: (len(s.assigned), s.ready_at is None, s.index))
        now = time.monotonic()
        if not slot.assigned and slot.ready_at is not None:
            slot.head_started = now
        slot.assigned.append((batch, now))
        slot.outbox.append(batch)

    def _flush_outboxes(self) -> None:
        """One message per worker for all it was given this round."""
        for slot in self.slots.values():
            if not slot.outbox:
                continue
            batches, slot.outbox = slot.outbox, []
            try:
                slot.conn.send(batches if len(batches) > 1 else batches[0])
            except OSError:  # died since the last poll: its sentinel reports it; these never left
                slot.broken = True
                for _ in batches:
                    slot.assigned.pop()
                if not slot.assigned:
                    slot.head_started = None
                self.orphans.extendleft(reversed(batches))

    def _flush_orphans(self) -> None:
        while self.orphans and (
            len(self.slots) < self.count or any(s.room(self.prefetch) > 0 for s in self.slots.values())
        ):
            self._send(self.orphans.popleft())

    # ------------------------------------------------------------- events

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` seconds for outcomes; handle deaths and timeouts on the way."""
        self._flush_orphans()
        self._flush_outboxes()
        outcomes: list[Outcome] = []
        now = time.monotonic()
        next_deadline = min((s.run_deadline(self.timeout) for s in self.slots.values()), default=now + timeout)
        wait_for = max(0.0, min(timeout, next_deadline - now))
        ready = [key.data for key, _ in self._selector.select(wait_for)]
        for what, slot in ready:
            if what == "pipe" and self.slots.get(slot.index) is slot:
                self._drain(slot, outcomes)
        for what, slot in ready:
            if what == "exit" and self.slots.get(slot.index) is slot:
                self._on_death(slot, outcomes)
        self._watchdog(outcomes)
        reap_adopted()
        self._flush_orphans()
        self._flush_outboxes()
        self.prefetch = self._depth.update(outcomes)  # about QUEUE_S seconds of work queued per worker
        return outcomes

    def _drain(self, slot: _Slot, outcomes: list[Outcome]) -> None:
        # Connection.poll() builds a new selector per call; a poll object kept per worker does not
        if slot.poller is None:
            slot.poller = select.poll()
            slot.poller.register(slot.conn.fileno(), select.POLLIN)
        while True:
            try:
                if not slot.poller.poll(0):
                    return
                message = slot.conn.recv()
            except (EOFError, OSError):
                return  # the sentinel reports the death
            now = time.monotonic()
            if isinstance(message, Outcome):
                slot.assigned.popleft()
                slot.head_started = now if slot.assigned else None
                self.init_failures_in_a_row = 0
                outcomes.append(message)
                if message.kind in (OUT_OF_MEMORY, WORKER_DIED):  # it stops serving (worker.py): replace it
                    log.error("worker %d stopped after mini-batch %s: %s", slot.index, message.batch_id,
                              message.message)
                    self._retire(slot)
                    self.orphans.extendleft(reversed([batch for batch, _ in slot.assigned]))
                    return
            elif isinstance(message, Ready):
                slot.ready_at = now
                slot.head_started = now if slot.assigned else None
                self.init_failures_in_a_row = 0
                if self.on_ready:
                    self.on_ready(message)
            elif isinstance(message, InitFailed):
                self._init_failed(slot, message.message, message.traceback)
                return

    def _init_failed(self, slot: _Slot, message: str, details: str = "") -> None:
        """init() failed in ``slot``: requeue its mini-batches untried, replace it, maybe give up."""
        self.init_failures_in_a_row += 1
        log.error("worker %d failed to start: %s\n%s", slot.index, message, details)
        self._retire(slot)
        self.orphans.extendleft(reversed([batch for batch, _ in slot.assigned]))
        if self.init_failures_in_a_row >= 3 * max(1, self.peak):
            self.kill_all()
            raise JobFailedError(
                f"workers failed to start {self.init_failures_in_a_row} times in a row: {message}",
                hint=f"see {self.config.log_dir}/worker-*.log",
            )

    def _forget(self, slot: _Slot) -> None:
        for obj in (slot.conn, slot.process.sentinel):
            try:
                self._selector.unregister(obj)
            except (KeyError, ValueError):
                pass

    def _retire(self, slot: _Slot) -> None:
        self._forget(slot)
        del self.slots[slot.index]
        if slot.process.is_alive():
            kill_tree(slot.process.pid)
        slot.process.join(1)
        slot.conn.close()

    def _on_death(self, slot: _Slot, outcomes: list[Outcome]) -> None:
        self._drain(slot, outcomes)  # what it managed to send before dying still counts
        if self.slots.get(slot.index) is not slot:
            return  # already replaced (its InitFailed arrived first)
        slot.process.join(1)
        how = describe_exit(slot.process.exitcode)
        if slot.ready_at is None:
            self._init_failed(slot, f"the worker died during init(): {how}")
            return
        self._retire(slot)
        if slot.assigned:
            batch, _ = slot.assigned.popleft()
            message = f"worker {slot.index} died ({how}) while running mini-batch {batch.id}"
            log.error(message)
            outcomes.append(self._lost(batch, slot, WORKER_DIED, message))
            self.orphans.extendleft(reversed([b for b, _ in slot.assigned]))

    def _lost(self, batch: MiniBatch, slot: _Slot, kind: str, message: str) -> Outcome:
        started = slot.head_started or time.monotonic()
        seconds = time.monotonic() - started
        return Outcome(
            batch_id=batch.id,
            part=batch.part,
            worker=slot.index,
            ok=False,
            items=batch.known_items,
            kind=kind,
            message=message,
            started=time.time() - seconds,
            seconds=seconds,
        )

    def _watchdog(self, outcomes: list[Outcome]) -> None:
        """Kill workers whose run() or init() outlived the timeout; dump their stack first."""
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if now < slot.run_deadline(self.timeout):
                continue
            try:
                os.kill(slot.process.pid, signal.SIGUSR1)  # faulthandler: stack to the worker's log
                time.sleep(STACK_DUMP_WAIT_S)
            except ProcessLookupError:
                pass
            if slot.ready_at is None:
                self._init_failed(slot, f"init() did not finish within {self.timeout:g}s (run_invocation_timeout)")
                continue
            batch, _ = slot.assigned.popleft()
            message = (
                f"run() on mini-batch {batch.id} took longer than run_invocation_timeout "
                f"({self.timeout:g}s); worker {slot.index} was killed (its stack is in worker-{slot.index}.log)"
            )
            log.error(message)
            outcomes.append(self._lost(batch, slot, TIMEOUT, message))
            self._retire(slot)
            self.orphans.extendleft(reversed([b for b, _ in slot.assigned]))
