"""The Ray actor of ``backend: ray`` (one worker process on a node) and the task that reads a dead
actor's last log lines on its node.

The actor wraps :class:`batchinfer.worker.ScriptRuntime`, as the local worker process does; its fds 1/2
go to a file in a node-local folder (``node_folder``), whose new bytes go back with each reply.
``run()`` runs in the actor's main thread (a plain actor, no concurrency groups), as locally.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from batchinfer import capture
from batchinfer.executors import keeper
from batchinfer.inputs import MiniBatch
from batchinfer.protocol import InitFailed, Ready, WorkerConfig
from batchinfer.worker import ScriptRuntime

LOG = "worker.log"  # in an actor's folder: its fds 1 and 2
RUNNING = "running"  # in an actor's folder: the try it runs now (running_record), empty between tries


def node_folder(run: str) -> str:
    """This run's folder on a node (the actors' logs and scratch folders)."""
    return os.path.join(tempfile.gettempdir(), f"batchinfer-ray-{run}")


@ray.remote(max_restarts=0, max_task_retries=0)
class WorkerActor:
    """One worker process on a node: :class:`ScriptRuntime` with its fds 1/2 in a node-local log file."""

    def __init__(self, config: WorkerConfig, index: int, run: str, name: str, timeout: float) -> None:
        self.folder = os.path.join(node_folder(run), name)
        os.makedirs(self.folder, exist_ok=True)
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
        # which try runs now, for the coordinator after a death (salvage_log): the outcomes an actor
        # yielded just before it died may never reach the coordinator, so "the first one not reported"
        # is not always the one that was running
        self.running = os.open(os.path.join(self.folder, RUNNING), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

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
        """Run ``batches`` in order; one (Outcome, new log bytes) as each try ends."""
        if self.queue is None or self.ended:
            return
        self.queue.add(batches)
        while (got := self.queue.next(block=False)) is not None:
            batch, fetch = got
            os.pwrite(self.running, running_record(batch.id, batch.part).encode(), 0)
            faulthandler.dump_traceback_later(self.timeout, file=sys.stderr)  # a hung run()'s stack
            try:
                outcome = self.runtime.run(batch, fetch)
            finally:
                faulthandler.cancel_dump_traceback_later()
            os.ftruncate(self.running, 0)
            if ScriptRuntime.ends_worker(outcome):
                self.ended = True
                self.queue.take_back()  # the coordinator hands them to other actors, untried
            yield outcome, self._new_log()
            if self.ended:
                return

    def close(self) -> bytes:
        """shutdown() (unless a try ended this worker), the private folder removed; the last log bytes."""
        self.runtime.close()
        capture._finish()  # with secrets, a capture process copies fds 1/2 into the log: let it finish
        keeper.kill_marked()  # what the script started and left running goes now, not at the actor's kill
        data = self._new_log()
        shutil.rmtree(self.folder, ignore_errors=True)
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
    shutil.rmtree(folder, ignore_errors=True)
    return data, running

