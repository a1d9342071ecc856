"""``backend: ray``: the workers are Ray actors, one per process, spread over ``node_count`` nodes.

Data flow (the coordinator stays in the ``batchinfer`` process; only descriptors and rows travel):

    scheduler --submit(MiniBatch)--> RayExecutor --actor.serve([MiniBatch, ...])--> actor i (ScriptRuntime)
    scheduler <--poll(): [Outcome]-- RayExecutor <--([Outcome, ...], log bytes) per reply-- (a streaming generator)

- **Session**: ``ray_address`` (``auto``, ``host:port``; Ray Client's ``ray://`` is refused for now:
  its calls cannot stream) is connected to; with
  none, a Ray instance of our own starts on 127.0.0.1 (usage stats off, a random auth token) and
  stops at the end. A guardian process kills that instance's processes if the coordinator dies
  (Ray's raylet dies with its driver, but its agents would outlive it).
- **Placement**: a placement group of ``node_count`` bundles, strategy ``STRICT_SPREAD`` (one node
  each), each bundle ``process_count_per_node`` x (``num_cpus_per_process`` CPUs,
  ``num_gpus_per_process`` GPUs); actor i lives in bundle ``i // process_count_per_node`` and its
  replacement in the same bundle (Ray re-places a lost node's bundle where it can).
- **Dispatch**: as the local executor (``local.py``): actors start on demand; each holds the
  mini-batch it runs plus about ``QUEUE_S`` seconds of queued ones; the mini-batches given to an
  actor in one round go in one call, whose outcomes stream back in replies: each holds the tries
  that ended within about ``QUEUE_S`` (a Ray object costs the driver ~0.5 ms, so a reply per try
  capped size-1 mini-batches at a few hundred a second), and a try starts within ``QUEUE_S`` of the
  last reply, so the coordinator's deadline for it counts from that reply plus ``QUEUE_S``. An actor's mini-batches are sent
  once its init() is done; until then an idle ready actor takes them (after a lost node, a new
  actor may wait for a node that never comes).
- **Faults**: ``run()`` past ``run_invocation_timeout``: faulthandler in the actor writes its stack
  at the deadline (a C thread: even while ``run()`` holds the GIL), the actor is killed and
  replaced; a dead actor or node likewise. The try it was running (the actor records it in a file on
  its node, read back after the kill or death: tries that ended may not have been reported yet) is a
  ``timeout`` or ``worker_died``; its other mini-batches go to other actors untried.
- **Logs**: ``worker-N.log`` is made when actor N starts (N: the lowest free index, as locally); the
  actor's fds 1 and 2 go to a file on its node; new bytes come back with each reply and are appended
  there; what a killed or dead actor wrote last (its stack, or a hung init()'s lines) is read by a
  small task on its node (at ``kill_all()`` too).

The session (connect, guardian, node counts, path checks) is ``ray_session.py``; the actor and the
task that reads a dead actor's log are ``ray_actor.py``; this module is the one the registry imports.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from batchinfer.errors import BackendUnavailableError, JobFailedError
from batchinfer.executors.base import QUEUE_S, PrefetchDepth
from batchinfer.executors.ray_actor import WorkerActor, node_folder, running_record, salvage_log
from batchinfer.executors.ray_paths import check_paths
from batchinfer.executors.ray_session import (
    close_session,
    guardian,
    open_session,
    processes_per_node,
    requested_per_node,
    runtime_env_of,
    why,
)
from batchinfer.inputs import MiniBatch
from batchinfer.output import open_own_file
from batchinfer.protocol import TIMEOUT, WORKER_DIED, InitFailed, Outcome, Ready, WorkerConfig
from batchinfer.redact import register_secrets
from batchinfer.worker import ScriptRuntime

STOP_WAIT_S = 10.0  # stop(): how long shutdown() may take in the actors
DUMP_MARGIN_S = 0.5  # after a deadline, before the kill: the actor's faulthandler writes the stack at the deadline
PLACEMENT_WAIT_S = 30.0  # the placement group must be ready by then (the nodes were counted first)
SALVAGE_WAIT_S = 5.0  # at the end, how long the last log reads of killed actors may take (a task needs a
# worker process: seconds on a busy machine), and before them, the deaths of actors still starting
PLACED_REFRESH_S = 1.0  # how long a look at which bundles are placed is trusted

log = logging.getLogger("batchinfer.executor")


# ------------------------------------------------------------------ the executor


@dataclass
class _Slot:
    """One actor and what it was given."""

    index: int
    actor: Any
    started_at: float
    start_ref: Any = None
    ready_at: float | None = None
    name: str = ""  # its folder on its node (ray_actor.node_folder): its log, its scratch folder
    node: str = ""  # known once it replied, else looked up (its placement bundle's node)
    closed: bool = False  # close() returned: its last log lines are in, its folder gone
    assigned: deque = field(default_factory=deque)  # MiniBatch, in the order given
    head_started: float | None = None
    outbox: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # serve() generators in flight, in order
    received: int = 0  # bytes of its log received so far

    def room(self, prefetch: int) -> int:
        return 1 + prefetch - len(self.assigned)

    def run_deadline(self, timeout: float) -> float:
        if self.ready_at is None:
            return self.started_at + timeout + DUMP_MARGIN_S
        if self.assigned and self.head_started is not None:
            # the running try started within QUEUE_S of the last reply (WorkerActor.serve)
            return self.head_started + QUEUE_S + timeout + DUMP_MARGIN_S
        return float("inf")


class RayExecutor:
    """Actors on a Ray cluster, placed by a placement group; knows nothing of thresholds or output."""

    @classmethod
    def prepare(cls, spec: Any) -> None:
        """First thing in a run (registry's ``prepare``): refuse what other nodes cannot see, connect
        (or start our own Ray, while the coordinator checks the inputs), and count the nodes."""
        check_paths(spec)
        open_session(spec.ray_address, runtime_env_of(spec))
        try:
            processes_per_node(spec.node_count, requested_per_node(spec), spec.num_cpus_per_process, spec.num_gpus_per_process)
        except BaseException:
            close_session()
            raise

    @classmethod
    def from_spec(cls, spec: Any, config: WorkerConfig, on_ready: Callable[[Ready], None] | None) -> RayExecutor:
        """The executor of ``spec`` (``backend: ray``); local-only paths on several nodes are refused here."""
        check_paths(spec)
        per_node = requested_per_node(spec)
        return cls(config, spec.node_count, per_node, spec.num_cpus_per_process, spec.num_gpus_per_process,
                   spec.run_invocation_timeout, spec.ray_address, on_ready,
                   runtime_env=runtime_env_of(spec))

    def __init__(self, config: WorkerConfig, node_count: int, per_node: int | None, cpus: float, gpus: float,
                 timeout: float, address: str | None = None, on_ready: Callable[[Ready], None] | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        self.config = config
        self.node_count = node_count
        self.per_node = per_node
        self.cpus = cpus
        self.gpus = gpus
        self.timeout = timeout
        self.address = address
        self.on_ready = on_ready
        self.count = 0  # set by start()
        self.slots: dict[int, _Slot] = {}
        self.started = 0
        self.peak = 0
        self.orphans: deque[MiniBatch] = deque()
        self.init_failures_in_a_row = 0
        self._depth = PrefetchDepth()
        self.prefetch = self._depth.depth
        self._owned = False
        self._connected = False
        self._pg: Any = None
        self._run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._salvages: dict[Any, tuple[_Slot, str | None]] = {}  # log reads of killed actors -> (slot, how it died)
        self._settled: list[Outcome] = []  # outcomes settled outside poll(), given by the next poll()
        self._runtime_env = runtime_env
        self.startup_s: float | None = None
        self._placed: tuple[float, set[int]] | None = None  # (when looked up, bundles placed on a live node)
        self._unplaceable_since: float | None = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect (or start our own Ray), count the nodes that fit, and reserve them (placement group)."""
        began = time.monotonic()
        session = open_session(self.address, self._runtime_env)
        self._owned = session.owned
        self._connected = True
        try:
            per_node = self.per_node = processes_per_node(self.node_count, self.per_node, self.cpus, self.gpus)
        except BaseException:
            self.kill_all()
            raise
        self.count = self.node_count * per_node
        self.config = replace(self.config, processes_per_node=per_node, scratch_dir="")
        if session.token:  # the actors' environment holds it: masked in their logs, as the user's secrets
            register_secrets((session.token,))
            self.config = replace(self.config, secret_values=(*self.config.secret_values, session.token))
        if self._runtime_env:  # the actors' working directory is Ray's copy of the script's folder
            rel = os.path.relpath(self.config.entry_path, self.config.source_directory)
            self.config = replace(self.config, source_directory="", entry_path=rel)
        bundle = {"CPU": self.cpus * per_node}
        if self.gpus:
            bundle["GPU"] = self.gpus * per_node
        self._pg = placement_group([dict(bundle) for _ in range(self.node_count)], strategy="STRICT_SPREAD")
        ready, _ = ray.wait([self._pg.ready()], timeout=PLACEMENT_WAIT_S)
        if not ready:
            self.kill_all()
            raise BackendUnavailableError(
                f"the Ray cluster did not give {self.node_count} nodes with {bundle} each within "
                f"{PLACEMENT_WAIT_S:g}s (other jobs hold them?)", hint="lower node_count or free the cluster")
        self.startup_s = session.seconds
        log.info("ray: %s in %.1fs, nodes reserved in %.1fs; %d node(s) x %d process(es), each %g CPU, %g GPU",
                 "started a local instance" if self._owned else f"connected to {self.address}",
                 session.seconds, time.monotonic() - began, self.node_count, per_node, self.cpus, self.gpus)

    def _free_indexes(self) -> list[int]:
        """Indexes an actor can start at now: not taken, and their bundle placed on a live node (after a
        lost node, STRICT_SPREAD with no spare node: its bundle is never placed again)."""
        free = sorted(set(range(self.count)) - set(self.slots))
        if not free:
            return []
        now = time.monotonic()
        if self._placed is None or now - self._placed[0] > PLACED_REFRESH_S:
            self._placed = (now, self._placed_bundles())
        placed = self._placed[1]
        return [i for i in free if i // self.per_node in placed]

    def _placed_bundles(self) -> set[int]:
        """Bundles of the placement group on a node that is alive."""
        try:
            placed = placement_group_table(self._pg)["bundles_to_node_id"]
            alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        except Exception:  # noqa: BLE001 - the session may be gone: spawning fails visibly then
            return set(range(self.node_count))
        return {bundle for bundle, node in placed.items() if node in alive}

    def _check_placeable(self) -> None:
        """No actor left and none can start (every bundle's node lost, none to replace it): fail,
        after PLACEMENT_WAIT_S for Ray to re-place a bundle on a spare node."""
        if self.slots or self._free_indexes() or not self.orphans:
            self._unplaceable_since = None
            return
        now = time.monotonic()
        if self._unplaceable_since is None:
            self._unplaceable_since = now
            log.warning("ray: no node of the placement group is left; waiting %gs for Ray to re-place one",
                        PLACEMENT_WAIT_S)
        elif now - self._unplaceable_since > PLACEMENT_WAIT_S:
            self.kill_all()
            raise JobFailedError(
                f"every node that held this job's workers was lost and the Ray cluster placed none in their "
                f"stead within {PLACEMENT_WAIT_S:g}s", hint="add nodes to the cluster and run the job again to resume")

    def _spawn(self) -> _Slot:
        index = self._free_indexes()[0]
        options: dict[str, Any] = {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                self._pg, placement_group_bundle_index=index // self.per_node),
        }
        name = f"worker-{index}-{self.started}"
        actor = WorkerActor.options(**options).remote(self.config, index, self._run, name, self.timeout)
        slot = self.slots[index] = _Slot(index, actor, time.monotonic(), name=name)
        self._append_log(index, b"")  # every worker started has its log, as locally, even if it never writes
        slot.start_ref = actor.start.remote()
        self.started += 1
        self.peak = max(self.peak, len(self.slots))
        log.debug("worker %d starting (bundle %d)", index, index // self.per_node)
        return slot

    def stop(self) -> None:
        """shutdown() in every ready actor (their last log lines kept), then kill what is left."""
        closing = {s.actor.close.remote(): s for s in self.slots.values() if s.ready_at is not None}
        if closing:
            done, _ = ray.wait(list(closing), num_returns=len(closing), timeout=STOP_WAIT_S)
            for ref in done:
                try:
                    self._log(closing[ref], ray.get(ref))
                    closing[ref].closed = True
                except ray.exceptions.RayError:
                    pass
        self.kill_all()

    def kill_all(self) -> None:
        """Kill every actor at once, remove the placement group, leave (or stop) the Ray session."""
        if not self._connected:
            close_session()  # opened by prepare(), for a run that stopped before start()
            return
        starting = []
        for slot in self.slots.values():
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - dead already
                pass
            if slot.ready_at is None:
                starting.append(slot.start_ref)
        if starting:  # dead once they fail: only then is a folder one of them was making there to remove
            ray.wait(starting, num_returns=len(starting), timeout=SALVAGE_WAIT_S)
        for slot in list(self.slots.values()):
            self._retire(slot, salvage=not slot.closed)  # what an actor that never replied wrote, too
        if self._salvages:
            done, _ = ray.wait(list(self._salvages), num_returns=len(self._salvages), timeout=SALVAGE_WAIT_S)
            self._take_salvages(done, None)
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception:  # noqa: BLE001 - the session may be gone already
                pass
            self._pg = None
        close_session()  # our own instance stops with it
        self._connected = False
        if self._owned:
            shutil.rmtree(node_folder(self._run), ignore_errors=True)  # one node: this machine

    @property
    def busy(self) -> int:
        """Actors running a mini-batch now."""
        return sum(1 for s in self.slots.values() if s.assigned and s.ready_at is not None)

    # ------------------------------------------------------------- dispatch

    def free_slots(self) -> int:
        """How many more mini-batches the actors take now, counting those not started yet (orphans go first)."""
        room = sum(s.room(self.prefetch) for s in self.slots.values())
        room += len(self._free_indexes()) * (1 + self.prefetch)
        return max(0, room - len(self.orphans))

    def submit(self, batch: MiniBatch) -> None:
        """Give ``batch`` to the least loaded actor (call only when ``free_slots()`` > 0)."""
        open_slots = [s for s in self.slots.values() if s.room(self.prefetch) > 0]
        idle = any(not s.assigned for s in self.slots.values())
        if not idle and self._free_indexes():
            slot = self._spawn()
        elif not open_slots:
            self.orphans.appendleft(batch)
            return
        else:
            slot = min(open_slots, key=lambda s: (len(s.assigned), s.ready_at is None, s.index))
        if not slot.assigned and slot.ready_at is not None:
            slot.head_started = time.monotonic()
        slot.assigned.append(batch)
        slot.outbox.append(batch)

    def _flush(self) -> None:
        """Orphans first, then one call per actor for all it was given this round."""
        while self.orphans and (self._free_indexes()
                                or any(s.room(self.prefetch) > 0 for s in self.slots.values())):
            self.submit(self.orphans.popleft())
        for slot in self.slots.values():
            if slot.outbox and slot.ready_at is not None:
                slot.calls.append(slot.actor.serve.remote(slot.outbox))
                slot.outbox = []

    def _rebalance(self) -> None:
        """An actor that is not ready yet keeps its mini-batches here, unsent: while a ready actor is
        idle, they go to it (an actor waiting for a node, after a lost one, may never start)."""
        if not any(s.ready_at is not None and not s.assigned for s in self.slots.values()):
            return
        for slot in self.slots.values():
            if slot.ready_at is None and slot.assigned:
                self.orphans.extendleft(reversed(slot.assigned))
                slot.assigned.clear()
                slot.outbox = []

    # ------------------------------------------------------------- events

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` seconds for outcomes; handle deaths and timeouts on the way."""
        self._flush()
        outcomes, self._settled = self._settled, []
        now = time.monotonic()
        deadline = min((s.run_deadline(self.timeout) for s in self.slots.values()), default=now + timeout)
        targets: dict[Any, Any] = {}
        for slot in self.slots.values():
            if slot.ready_at is None:
                targets[slot.start_ref] = slot
            for call in slot.calls:
                targets[call] = slot
        targets.update({ref: None for ref in self._salvages})
        if targets:
            ready, _ = ray.wait(list(targets), num_returns=1, timeout=max(0.0, min(timeout, deadline - now)))
            if ready:
                ready, _ = ray.wait(list(targets), num_returns=len(targets), timeout=0)
            self._take_salvages([r for r in ready if r in self._salvages], outcomes)
            for ref in ready:
                slot = targets[ref]
                if slot is not None and self.slots.get(slot.index) is slot:
                    if ref is slot.start_ref:
                        self._started(slot)
                    else:
                        self._drain(slot, ref, outcomes)
        elif timeout > 0:
            time.sleep(min(timeout, max(0.0, deadline - now)))
        self._watchdog(outcomes)
        self._check_placeable()
        self._rebalance()
        self._flush()
        self.prefetch = self._depth.update(outcomes)  # as locally: about QUEUE_S seconds of work per actor
        return outcomes

    def _started(self, slot: _Slot) -> None:
        try:
            result, slot.node, data = ray.get(slot.start_ref)
        except ray.exceptions.RayError as exc:
            self._init_failed(slot, f"the worker died during init(): {why(exc)}")
            return
        self._log(slot, data)
        if isinstance(result, InitFailed):
            self._init_failed(slot, result.message, result.traceback)
            return
        slot.ready_at = time.monotonic()
        slot.head_started = slot.ready_at if slot.assigned else None
        self.init_failures_in_a_row = 0
        if (watcher := guardian()) is not None:
            watcher.watch({result.pid})
        if self.on_ready:
            self.on_ready(result)

    def _drain(self, slot: _Slot, call: Any, outcomes: list[Outcome]) -> None:
        """Every outcome of ``call`` that has arrived; a failed call means the actor died."""
        failure = self._receive(slot, call, outcomes)
        if failure is not None and self.slots.get(slot.index) is slot:
            self._on_death(slot, failure, outcomes)

    def _receive(self, slot: _Slot, call: Any, outcomes: list[Outcome]) -> str | None:
        """Every outcome of ``call`` that has arrived; what went wrong if the call failed (the actor died)."""
        while True:
            try:
                ref = next(call)
                reply, data = ray.get(ref)
            except StopIteration:
                slot.calls.remove(call)
                return None
            except ray.exceptions.RayError as exc:
                return why(exc)
            self._log(slot, data)
            for outcome in reply:
                for i, batch in enumerate(slot.assigned):
                    if batch.id == outcome.batch_id and batch.part == outcome.part:
                        del slot.assigned[i]
                        break
                outcomes.append(outcome)
            slot.head_started = time.monotonic() if slot.assigned else None
            self.init_failures_in_a_row = 0
            if reply and ScriptRuntime.ends_worker(outcome := reply[-1]):
                log.error("worker %d stopped after mini-batch %s: %s", slot.index, outcome.batch_id, outcome.message)
                self._retire(slot)
                self.orphans.extendleft(reversed(slot.assigned))
                return None
            if not ray.wait([call], timeout=0)[0]:
                return None

    def _init_failed(self, slot: _Slot, message: str, details: str = "") -> None:
        """init() failed in ``slot``: requeue its mini-batches untried, replace it, maybe give up."""
        self.init_failures_in_a_row += 1
        log.error("worker %d failed to start: %s\n%s", slot.index, message, details)
        self._retire(slot)
        self.orphans.extendleft(reversed(slot.assigned))
        if self.init_failures_in_a_row >= 3 * max(1, self.peak):
            self.kill_all()
            raise JobFailedError(
                f"workers failed to start {self.init_failures_in_a_row} times in a row: {message}",
                hint=f"see {self.config.log_dir}/worker-*.log",
            )

    def _retire(self, slot: _Slot, salvage: bool = True, died: str | None = None) -> None:
        """Kill the actor; read what it wrote last on its node (its stack), then its folder goes. ``died``:
        it died (how), or ``TIMEOUT`` (its try hung): its mini-batches are settled when the read says
        which one was running."""
        del self.slots[slot.index]
        self._placed = None  # its node may be gone: look again before placing another
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - dead already
            pass
        node = (slot.node or self._bundle_node(slot.index // self.per_node)) if salvage else ""
        if node:
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            ref = salvage_log.options(scheduling_strategy=strategy).remote(self._run, slot.name, slot.received)
            self._salvages[ref] = (slot, died)
        elif died is not None:
            self._settle(slot, died, None, self._settled)

    def _bundle_node(self, bundle: int) -> str:
        """The node of a bundle of the placement group ("" if none now: its node was lost)."""
        try:
            return placement_group_table(self._pg)["bundles_to_node_id"].get(bundle, "")
        except Exception:  # noqa: BLE001 - the session may be gone already
            return ""

    def _take_salvages(self, done: list[Any], outcomes: list[Outcome] | None) -> None:
        """The salvage reads in ``done``: their log bytes, and a dead actor's mini-batches settled
        (``outcomes`` None: at the end, when nothing is reported any more)."""
        for ref in done:
            slot, died = self._salvages.pop(ref)
            try:
                data, running = ray.get(ref)
            except ray.exceptions.RayError:
                data, running = b"", None  # the node is gone, with the log
            self._append_log(slot.index, data)
            if died is not None and outcomes is not None:
                self._settle(slot, died, running, outcomes)

    def _on_death(self, slot: _Slot, how: str, outcomes: list[Outcome]) -> None:
        """``slot``'s actor died: take what its other calls delivered, then read on its node which try ran."""
        if slot.ready_at is None:
            self._init_failed(slot, f"the worker died during init(): {how}")
            return
        for call in list(slot.calls):
            if ray.wait([call], timeout=0)[0]:
                self._receive(slot, call, outcomes)
        if self.slots.get(slot.index) is slot:  # not retired by a try that ended it
            self._retire(slot, died=how)

    def _settle(self, slot: _Slot, how: str, running: str | None, outcomes: list[Outcome]) -> None:
        """A dead actor's mini-batches: the one it was running (``running``: its ``running_record``, ""
        none, None unknown: the first not reported) is a ``worker_died`` try; the others never ran, or
        ran and their outcomes were lost with the actor before they were committed: untried, elsewhere."""
        if running is None:
            blamed = slot.assigned[0] if slot.assigned else None
        else:
            blamed = next((b for b in slot.assigned if running_record(b.id, b.part) == running), None)
        if blamed is not None:
            if how == TIMEOUT:
                message = (f"run() on mini-batch {blamed.id} took longer than run_invocation_timeout "
                           f"({self.timeout:g}s); worker {slot.index} was killed "
                           f"(its stack is in worker-{slot.index}.log)")
            else:
                message = f"worker {slot.index} died ({how}) while running mini-batch {blamed.id}"
            log.error(message)
            outcomes.append(self._lost(blamed, slot, TIMEOUT if how == TIMEOUT else WORKER_DIED, message))
        self.orphans.extendleft(reversed([b for b in slot.assigned if b is not blamed]))
        slot.assigned.clear()

    def _lost(self, batch: MiniBatch, slot: _Slot, kind: str, message: str) -> Outcome:
        started = slot.head_started or time.monotonic()
        seconds = time.monotonic() - started
        return Outcome(batch_id=batch.id, part=batch.part, worker=slot.index, ok=False, items=batch.known_items,
                       kind=kind, message=message, started=time.time() - seconds, seconds=seconds)

    def _watchdog(self, outcomes: list[Outcome]) -> None:
        """Kill actors whose run() or init() outlived the timeout (their stack was written at the deadline)."""
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if now < slot.run_deadline(self.timeout):
                continue
            if slot.ready_at is None:
                self._init_failed(slot, f"init() did not finish within {self.timeout:g}s (run_invocation_timeout), "
                                        "or no node of the Ray cluster could take the worker (a node was lost?)")
                continue
            # which try hung: the one its node's record names (outcomes of tries it ended may not be sent yet)
            self._retire(slot, died=TIMEOUT)

    # ------------------------------------------------------------- logs

    def _log(self, slot: _Slot, data: bytes) -> None:
        if data:  # most replies bring none: no open() per outcome
            slot.received += len(data)
            self._append_log(slot.index, data)

    def _append_log(self, index: int, data: bytes) -> None:
        """Append an actor's log bytes to ``<output>/logs/worker-N.log`` (made if missing)."""
        fd = open_own_file(Path(self.config.log_dir) / f"worker-{index}.log",
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, private=False)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
