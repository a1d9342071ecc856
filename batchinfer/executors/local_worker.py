"""The local worker process: a :class:`~batchinfer.worker.ScriptRuntime` served over one pipe.

A worker talks to the local executor (``executors/local.py``) over one duplex connection:

    executor --MiniBatch or [MiniBatch]--> worker   (a few queued: see executors/local.py)
    executor <--Ready | InitFailed--        (once, after init())
    executor <--Outcome--                   (one per MiniBatch, rows already serialised)
    executor --None-->                      (stop: shutdown() is called, the process exits)

A thread receives the messages as they come into the runtime's
:class:`~batchinfer.worker.WorkQueue`, which downloads the next mini-batches' files while
``run()`` works on the current one; the main thread runs them in order.

The script's stdout and stderr (file descriptors 1 and 2, so C libraries too) go to
``logs/worker-N.log``, never to the terminal. The worker dies with the coordinator: the kernel
kills it when the fork server dies, which the kernel kills when the coordinator dies (see
``_forkserver.py``), even while ``run()`` holds the GIL. A try that ends the worker (see
``worker.py``) is reported, then the process exits at once, without ``shutdown()``.

The fork server preloads this module (and so ``worker.py``): keep its imports light.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from batchinfer import _forkserver, capture
from batchinfer.errors import OutputError
from batchinfer.protocol import InitFailed, WorkerConfig
from batchinfer.worker import ScriptRuntime, WorkQueue

PARENT_CHECK_S = 0.5

log = logging.getLogger("batchinfer.worker")


def node_id(index: int, processes_per_node: int) -> str:
    """What ``batchinfer.node_id()`` answers in local worker ``index``: ``<hostname>-<n>``, n the local
    node (``node_count`` > 1 splits this machine's workers into nodes of ``processes_per_node``)."""
    return f"{socket.gethostname()}-{index // max(1, processes_per_node)}"


def _exit_with_coordinator(parent_pid: int, coordinator_pid: int) -> None:
    """Die with the coordinator: a kernel signal on Linux, and a watch thread as a second guard."""
    # the kernel SIGKILLs us when our parent, the fork server, exits (it needs no GIL); if the
    # server is gone already, we were orphaned before asking: exit now
    if not _forkserver.die_with_parent(parent_pid):
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            gone = os.getppid() != parent_pid
            if not gone and coordinator_pid:
                try:
                    os.kill(coordinator_pid, 0)
                except ProcessLookupError:
                    gone = True
                except PermissionError:
                    pass
            if gone:
                os._exit(3)

    threading.Thread(target=watch, name="batchinfer-parent-watch", daemon=True).start()


def _close_on_exec() -> None:
    """Keep our pipes (to the coordinator, the fork server, the resource tracker) from programs the script runs.

    File descriptors received from the fork server are inheritable; a child that held
    one would keep a helper of batchinfer's alive after the job.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def _receive(conn: Any, queue: WorkQueue) -> None:
    """The pipe-reading thread: mini-batches into ``queue`` as they arrive (never blocking the main
    thread); None, a closed pipe or an unreadable message closes it."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        except Exception:  # noqa: BLE001 - an unreadable message: stop serving, as a closed pipe
            log.exception("cannot read a message from the coordinator")
            message = None
        if message is None:
            queue.close()
            return
        queue.add(message if isinstance(message, list) else (message,))


def worker_main(index: int, conn: Any, config: WorkerConfig, log_name: str) -> None:
    """The worker process's entry point (started by the local executor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_coordinator(_forkserver.SERVER_PID or os.getppid(), config.coordinator_pid)
    _close_on_exec()
    try:
        capture.redirect_output(Path(config.log_dir) / log_name, config.logging_level, config.secret_values)
    except OutputError as exc:  # a link or a FIFO planted at the log's name: say so, start nothing
        conn.send(InitFailed(index, exc.message, ""))
        return
    runtime = ScriptRuntime(config, index, node_id(index, config.processes_per_node))
    try:
        started = runtime.start()
        conn.send(started)
        if isinstance(started, InitFailed):
            runtime.close()
            return
        queue = runtime.queue()
        threading.Thread(target=_receive, args=(conn, queue), name="batchinfer-inbox", daemon=True).start()
        while (got := queue.next()) is not None:
            outcome = runtime.run(*got)
            conn.send(outcome)
            if ScriptRuntime.ends_worker(outcome):
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)  # not a normal exit: the script's atexit handlers and threads could hang it
    except BaseException:  # the pipe broke (the coordinator is going): no shutdown(), only the folder goes
        if runtime.scratch:
            shutil.rmtree(runtime.scratch, ignore_errors=True)
        raise
    runtime.close()  # the executor said stop: shutdown() runs
