"""The Ray actor of ``backend: ray`` (one worker process on a node) and the task that reads a dead
actor's last log lines on its node.

The actor wraps :class:`batchinfer.worker.ScriptRuntime`, as the local worker process does; its fds 1/2
go to a file in a node-local folder (``node_folder``), whose new bytes go back with each reply.
``run()`` runs in the actor's main thread (a plain actor, no concurrency groups), as locally.
"""

from __future__ import annotations

import faulthandler
import fcntl
import glob
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from batchinfer import capture
from batchinfer.executors import keeper
from batchinfer.executors.base import QUEUE_S
from batchinfer.inputs import MiniBatch
from batchinfer.protocol import InitFailed, Outcome, Ready, WorkerConfig
from batchinfer.worker import ScriptRuntime

LOG = "worker.log"  # in an actor's folder: its fds 1 and 2
RUNNING = "running"  # in an actor's folder: the try it runs now (running_record), empty between tries


PREFIX = "batchinfer-ray-"  # a run's folder on a node: PREFIX + run, one folder per actor in it
STALE_S = 600.0  # a dead actor's folder this long untouched is removed by the next actor on its node


def node_folder(run: str) -> str:
    """This run's folder on a node (the actors' logs and scratch folders)."""
    return os.path.join(tempfile.gettempdir(), PREFIX + run)


def remove_folder(folder: str) -> None:
    """Remove an actor's folder, and its run's folder once it is empty (the last actor's on the node)."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(folder))
    except OSError:
        pass  # other actors of the run still have theirs


def make_folder(folder: str) -> None:
    """``folder`` and its run's folder (another actor may remove the run's folder meanwhile: try again)."""
    for _ in range(10):
        try:
            os.makedirs(folder, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    os.makedirs(folder, exist_ok=True)


def sweep_stale(now: float | None = None) -> None:
    """Remove actors' folders left on this node by runs whose coordinator died (or whose salvage task
    never ran): no live actor holds a lock on their ``RUNNING`` file and it is ``STALE_S`` untouched
    (a coordinator reads a dead actor's folder within seconds of its death); then empty run folders."""
    now = time.time() if now is None else now
    for run in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        for folder in glob.glob(os.path.join(run, "*")):
            path = os.path.join(folder, RUNNING)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # being made, or not an actor's folder
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if now - os.fstat(fd).st_mtime > STALE_S:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass  # its actor is alive
            finally:
                os.close(fd)
        try:
            os.rmdir(run)
        except OSError:
            pass


@ray.remote(max_restarts=0, max_task_retries=0)
class WorkerActor:
    """One worker process on a node: :class:`ScriptRuntime` with its fds 1/2 in a node-local log file."""

    def __init__(self, config: WorkerConfig, index: int, run: str, name: str, timeout: float) -> None:
        sweep_stale()
        self.folder = os.path.join(node_folder(run), name)
        make_folder(self.folder)
        self.log_path = os.path.join(self.folder, LOG)
        capture.redirect_output(Path(self.log_path), config.logging_level, config.secret_values)
        keeper.start()  # what the script starts (a double-forked daemon too) dies with this actor
        if config.source_directory == "":  # shipped with runtime_env working_dir: Ray's copy is the cwd
            here = os.getcwd()
            config = replace(config, source_directory=here, entry_path=os.path.join(here, config.entry_path))
        config = replace(config, scratch_dir=self.folder)
        self.runtime = ScriptRuntime(config, index, ray.get_runtime_context().get_node_id())
        self.timeout = timeout
        self.queue: Any = None
        self.ended = False
        self.sent = 0
        self.mean_s = 0.0  # a try's mean seconds here (serve() judges when to reply)
        # which try runs now, for the coordinator after a death (salvage_log): the outcomes an actor
        # yielded just before it died may never reach the coordinator, so "the first one not reported"
        # is not always the one that was running
        self.running = os.open(os.path.join(self.folder, RUNNING), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(self.running, fcntl.LOCK_EX)  # held while this actor lives: sweep_stale leaves its folder

    def _new_log(self) -> bytes:
        """The log's bytes not sent yet."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.sent)
                data = f.read()
        except OSError:
            return b""
        self.sent += len(data)
        return data

    def start(self) -> tuple[Ready | InitFailed, str, bytes]:
        """Import the script and init(); also its node (for a read of its log after its death)."""
        faulthandler.dump_traceback_later(self.timeout, file=sys.stderr)  # a hung init()'s stack
        try:
            result = self.runtime.start()
        finally:
            faulthandler.cancel_dump_traceback_later()
        if isinstance(result, Ready):
            self.queue = self.runtime.queue()
        return result, self.runtime.node_id, self._new_log()

    @ray.method(num_returns="streaming")
    def serve(self, batches: list[MiniBatch]):
        """Run ``batches`` in order; replies of (list of Outcome, new log bytes), each with the outcomes
        of the tries that ended since the last reply.

        A reply goes when ``QUEUE_S`` has passed since the last one (or the call's start), before a try
        that would likely end past that (judged from this actor's mean try), after a try that ends the
        worker, and at the end of the call. So a try always starts within ``QUEUE_S`` of the last reply:
        the coordinator's deadline for the running try counts from its last reply plus ``QUEUE_S``."""
        if self.queue is None or self.ended:
            return
        self.queue.add(batches)
        held: list[Outcome] = []
        since = time.monotonic()
        while (got := self.queue.next(block=False)) is not None:
            if held and time.monotonic() - since + self.mean_s >= QUEUE_S:
                yield held, self._new_log()
                held, since = [], time.monotonic()
            batch, fetch = got
            os.pwrite(self.running, running_record(batch.id, batch.part).encode(), 0)
            faulthandler.dump_traceback_later(self.timeout, file=sys.stderr)  # a hung run()'s stack
            try:
                outcome = self.runtime.run(batch, fetch)
            finally:
                faulthandler.cancel_dump_traceback_later()
            os.ftruncate(self.running, 0)
            self.mean_s = outcome.seconds if self.mean_s == 0 else 0.9 * self.mean_s + 0.1 * outcome.seconds
            held.append(outcome)
            if ScriptRuntime.ends_worker(outcome):
                self.ended = True
                self.queue.take_back()  # the coordinator hands them to other actors, untried
                break
        if held:
            yield held, self._new_log()

    def close(self) -> bytes:
        """shutdown() (unless a try ended this worker), the private folder removed; the last log bytes."""
        self.runtime.close()
        capture._finish()  # with secrets, a capture process copies fds 1/2 into the log: let it finish
        keeper.kill_marked()  # what the script started and left running goes now, not at the actor's kill
        data = self._new_log()
        remove_folder(self.folder)
        return data


def running_record(batch_id: int, part: tuple[int, int] | None) -> str:
    """The ``RUNNING`` file's text for a try of mini-batch ``batch_id`` (``part``: a piece of it)."""
    return f"{batch_id} {part[0]} {part[1]}" if part else f"{batch_id}"


@ray.remote(num_cpus=0, max_retries=0)
def salvage_log(run: str, name: str, offset: int) -> tuple[bytes, str]:
    """On a killed or dead actor's node (its folder ``name``): what it wrote after ``offset`` (a stack,
    a crash, init()'s lines if it never replied) and the try it was running (``running_record``, ""
    when none), then its folder removed."""
    folder = os.path.join(node_folder(run), name)
    try:
        with open(os.path.join(folder, LOG), "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        data = b""
    try:
        with open(os.path.join(folder, RUNNING)) as f:
            running = f.read().strip()
    except OSError:
        running = ""
    remove_folder(folder)
    return data, running

