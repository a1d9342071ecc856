"""The Ray session of a run (``backend: ray``): connect to ``ray_address`` or start a Ray instance of
our own on 127.0.0.1 (with a guardian that kills it if the coordinator dies), keep Ray's messages in
job.log, count the nodes that fit, and what the spec asks of the placement.

Imported through ``executors/ray.py``, which sets Ray's environment before ray is first imported.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import ray

from batchinfer.errors import BackendUnavailableError

CONNECT_CHECK_S = 3.0  # a TCP connection to ray_address first: Ray itself retries for 30 s and more

log = logging.getLogger("batchinfer.executor")


GUARDIAN = r"""
import os, signal, sys
pids = set()
for line in sys.stdin:
    if line.strip() == "done":
        sys.exit(0)
    pids.update(int(p) for p in line.split())
# the coordinator died: its Ray instance goes too (raylet and GCS die with it, their agents would not)
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guardian:
    """A process that kills our own Ray instance's processes when the coordinator dies (pipe EOF)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GUARDIAN], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=True, text=True, start_new_session=True,
        )
        self.known: set[int] = set()

    def watch(self, pids: set[int]) -> None:
        new = pids - self.known
        if new and self.proc.poll() is None:
            self.known |= new
            try:
                self.proc.stdin.write(" ".join(map(str, sorted(new))) + "\n")
                self.proc.stdin.flush()
            except OSError:
                pass

    def dismiss(self) -> None:
        try:
            self.proc.stdin.write("done\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _instance_pids() -> set[int]:
    """Our own Ray instance's processes (GCS, raylet, their agents and workers)."""
    import psutil

    node = ray._private.worker._global_node
    pids = {info.process.pid for infos in node.all_processes.values() for info in infos if info.process}
    for pid in list(pids):
        try:
            pids |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            pass
    return pids


def _quiet_ray() -> None:
    """Ray's messages to the driver (a worker died, ...) go to job.log: never to stdout or the terminal."""
    import ray._private.worker as ray_worker

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            log.warning("ray: %s", line)

    ray_worker.print_to_stdstream = to_log
    logging.getLogger("ray").setLevel(logging.ERROR)


def connect(address: str | None, runtime_env: dict[str, Any] | None = None) -> bool:
    """Connect to ``address``, or start a Ray instance of our own (True) on 127.0.0.1; ``runtime_env``:
    the job's (a local ``working_dir`` is uploaded to the cluster by ``ray.init``)."""
    _quiet_ray()
    common = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": False,
              "runtime_env": runtime_env}
    if address is None:
        shown = "a local Ray instance"
        kwargs = {"address": "local", "num_cpus": os.cpu_count(), "include_dashboard": False,
                  "_node_ip_address": "127.0.0.1"}
    else:
        shown = f"the Ray cluster at {address}"
        kwargs = {"address": address}
    hint = "check ray_address (auto, host:port of the head's GCS, or ray://host:10001) and RAY_AUTH_TOKEN"
    if address not in (None, "auto"):
        _check_listening(address, shown, hint)
    try:
        with _stderr_to_log():
            ray.init(**kwargs, **common)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        raise BackendUnavailableError(f"cannot connect to {shown}: {why(exc)}", hint=hint) from None
    return address is None


def _check_listening(address: str, shown: str, hint: str) -> None:
    """Fail at once when nothing listens at ``address`` (Ray itself retries for more than 30 s)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BackendUnavailableError(f"cannot connect to {shown}: nothing answers there ({reason})",
                                      hint=hint) from None


@contextlib.contextmanager
def _stderr_to_log() -> Any:
    """Ray's C++ core writes its warnings on fd 2 while it connects: into job.log instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode("utf-8", "replace").splitlines():
                log.warning("ray: %s", line)


class _Session:
    """This process's Ray session: connected (or our own instance started) once per run."""

    def __init__(self, address: str | None, runtime_env: dict[str, Any] | None) -> None:
        began = time.monotonic()
        self.address = address
        self.runtime_env = runtime_env
        self.guardian = _Guardian() if address is None else None
        try:
            self.owned = connect(address, runtime_env)
        except BaseException:
            self.close()
            raise
        if self.guardian is not None:
            self.guardian.watch(_instance_pids())
        self.seconds = time.monotonic() - began
        atexit.register(self.close)  # a run that never made its executor (a job already complete)

    def close(self) -> None:
        """Leave the cluster; our own instance stops, and its guardian goes."""
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - the session may be half made
            pass
        if self.guardian is not None:
            self.guardian.dismiss()
            self.guardian = None
        atexit.unregister(self.close)


_session: _Session | None = None


def open_session(address: str | None, runtime_env: dict[str, Any] | None = None) -> _Session:
    """The run's session, made on first use (by :meth:`RayExecutor.prepare`, else by ``start()``)."""
    global _session
    if (_session is None or (_session.address, _session.runtime_env) != (address, runtime_env)
            or not ray.is_initialized()):
        close_session()
        _session = _Session(address, runtime_env)
    return _session


def close_session() -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


def processes_per_node(node_count: int, per_node: int | None, cpus: float, gpus: float) -> int:
    """How many actors go on each node: ``per_node``, or (None) as many as the smallest of the
    ``node_count`` roomiest nodes holds; too few nodes that fit: one line, exit 2."""
    counts = sorted(fitting_nodes({"CPU": cpus, "GPU": gpus}), reverse=True)
    fitting = [c for c in counts if c >= (per_node or 1)]
    if len(fitting) < node_count:
        each = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        wanted = per_node or 1
        raise BackendUnavailableError(
            f"node_count is {node_count} but the Ray cluster has {len(counts)} node"
            f"{'s' if len(counts) != 1 else ''}, {len(fitting)} of them with room for {wanted} process"
            f"{'es' if wanted > 1 else ''} of {each} each",
            hint="lower node_count, process_count_per_node or num_cpus_per_process/num_gpus_per_process, "
                 "or add nodes",
        )
    return per_node or max(1, fitting[node_count - 1])


def fitting_nodes(per_process: dict[str, float]) -> list[int]:
    """For each alive node: how many processes of ``per_process`` resources it holds (0: none)."""
    counts = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        total = node.get("Resources", {})
        fits = [int(total.get(name, 0) / need + 1e-9) for name, need in per_process.items() if need > 0]
        counts.append(min(fits) if fits else 0)
    return counts


def guardian() -> _Guardian | None:
    """The guardian of the run's own Ray instance (None: connected to a cluster, or no session)."""
    return _session.guardian if _session is not None else None


def runtime_env_of(spec: Any) -> dict[str, Any] | None:
    """On several nodes without a shared filesystem, the script's folder goes with the job to every
    node (Ray's ``working_dir``: uploaded once, at most 500 MiB, unpacked as each actor's first cwd)."""
    if spec.node_count > 1 and not spec.shared_filesystem:
        return {"working_dir": str(spec.source_directory)}
    return None


def requested_per_node(spec: Any) -> int | None:
    """``process_count_per_node`` if the user set it; None: as many as fit."""
    return spec.process_count_per_node if "process_count_per_node" in spec.model_fields_set else None


def why(exc: BaseException) -> str:
    """A Ray error in a few words (its first line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
