"""The Ray session of a run (``backend: ray``): connect to ``ray_address`` or start a Ray instance of
our own on 127.0.0.1 (with a guardian that kills it if the coordinator dies), keep Ray's messages in
job.log, count the nodes that fit, and what the spec asks of the placement.

Ray's settings (usage stats off, our own instance on 127.0.0.1 only, token authentication with a
random token) are in ``os.environ`` only while a session is open: the caller's values come back at
close (``batchinfer.run()`` from Python leaves the environment as it found it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import grpc
import ray
from ray._private import ray_constants
from ray._raylet import AuthenticationTokenLoader, Config
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

from batchinfer.errors import BackendUnavailableError
from batchinfer.layout import STATE_DIR
from batchinfer.resume import output_folder
from batchinfer.spec import is_url

CONNECT_CHECK_S = 3.0  # a TCP connection to ray_address first: Ray itself retries for 30 s and more
GCS_PROBE_S = 5.0  # then one GCS call: something else listening there makes ray.init retry for minutes
AUTH_NAMES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# the token of our own instance (or of a session without one): one per process, so that a second run
# in the same process and the workers of the first agree
TOKEN = secrets.token_hex(16)
RAY_CLIENT_REFUSED = ("Ray Client addresses are not supported yet: run batchinfer on a machine of the cluster "
                      "with ray_address: auto or host:6379")

log = logging.getLogger("batchinfer.executor")


class _RayEnvironment:
    """Ray's settings in ``os.environ`` for one session; :meth:`restore` puts the caller's values back.

    Ray reads ``RAY_AUTH_MODE`` into its config and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` into a
    constant when ray is imported: both are read again here after each change. The user's own
    settings win. Token authentication with a random token unless the user has a token or chose a
    mode: else Ray writes one under ~/.ray (a token-mode client still connects to a cluster without
    authentication; one with it needs the user's token, which is then left alone).
    """

    def __init__(self, owned: bool) -> None:
        settings = {"RAY_USAGE_STATS_ENABLED": "0"}
        if owned:  # our instance binds 127.0.0.1; a cluster's driver must find its node's address
            settings["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        self.token: str | None = None
        if not any(os.environ.get(name) for name in AUTH_NAMES) and not (
                Path.home() / ".ray" / "auth_token").exists():
            self.token = TOKEN
            settings |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
        settings = {name: value for name, value in settings.items() if not os.environ.get(name)}
        self.saved = {name: os.environ.get(name) for name in settings}
        os.environ.update(settings)
        _reread()

    def restore(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.saved = {}
        _reread()


def _reread() -> None:
    """Ray's settings read at import, read again from ``os.environ``."""
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(
        ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, not ray_constants.IS_WINDOWS_OR_OSX)


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


def connect(address: str | None, runtime_env: dict[str, Any] | None, held: list[str]) -> bool:
    """Connect to ``address``, or start a Ray instance of our own (True) on 127.0.0.1; ``runtime_env``:
    the job's (a local ``working_dir`` is uploaded to the cluster by ``ray.init``). What Ray's C++
    core writes on fd 2 meanwhile is appended to ``held`` (for job.log, which does not exist yet)."""
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
    hint = "check ray_address (auto, or host:port of the head's GCS, 6379 by default) and RAY_AUTH_TOKEN"
    if address is not None and address.startswith("ray://"):
        raise BackendUnavailableError(RAY_CLIENT_REFUSED)
    if address not in (None, "auto"):
        _check_listening(address, shown, hint)
        _check_gcs(address, shown, hint)
    try:
        with _stderr_held(held):
            ray.init(**kwargs, **common)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        if runtime_env and _is_package_error(exc):
            raise BackendUnavailableError(
                f"Ray could not ship the script's folder {runtime_env['working_dir']} to the nodes: "
                f"{_package_why(exc)}",
                hint="move data, models and outputs out of source_directory (Ray takes at most 500 MiB), "
                     "or use shared_filesystem: true if every node mounts it") from None
        raise BackendUnavailableError(f"cannot connect to {shown}: {why(exc)}", hint=hint) from None
    return address is None


def _is_package_error(exc: BaseException) -> bool:
    """The failure is Ray packing or uploading the ``working_dir`` (over 500 MiB, a file it cannot read)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return type(exc).__name__ == "RuntimeEnvSetupError" or "Package size" in str(exc) or any(f"{os.sep}runtime_env{os.sep}" in frame.filename for frame in frames)


def _package_why(exc: BaseException) -> str:
    """Ray's reason in a few words: its last line ("Failed to upload working_dir ...: [Errno 13] ..."),
    the size without Ray's advice."""
    text = str(exc).strip()
    last = text.splitlines()[-1] if text else type(exc).__name__
    return last.split(". To exclude")[0]


def _check_listening(address: str, shown: str, hint: str) -> None:
    """Fail at once when nothing listens at ``address`` (Ray itself retries for more than 30 s)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BackendUnavailableError(f"cannot connect to {shown}: nothing answers there ({reason})",
                                      hint=hint) from None


def _check_gcs(address: str, shown: str, hint: str) -> None:
    """Fail within seconds when what listens at ``address`` is not a Ray GCS (an HTTP server, the
    dashboard's port 8265, the Ray Client's 10001): ``ray.init`` would retry there for minutes. One
    GCS call with a deadline; a GCS that wants another token still is one (``ray.init`` says so)."""
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=GCS_PROBE_S)
            return
        except grpc.RpcError as exc:
            code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return
    what = ("a gRPC server answers there, not a Ray GCS (the Ray Client's port, 10001?)"
            if code == grpc.StatusCode.UNIMPLEMENTED else
            f"no Ray GCS answered there within {GCS_PROBE_S:g}s"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED else
            "something answers there, but not as a Ray GCS (an HTTP server, such as the dashboard on 8265?)")
    raise BackendUnavailableError(f"cannot connect to {shown}: {what}", hint=hint)


@contextlib.contextmanager
def _stderr_held(held: list[str]) -> Any:
    """Ray's C++ core writes its warnings on fd 2 while it connects: into ``held`` instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            held.extend(captured.read().decode("utf-8", "replace").splitlines())


class _Session:
    """This process's Ray session: connected (or our own instance started) once per run."""

    def __init__(self, address: str | None, runtime_env: dict[str, Any] | None) -> None:
        began = time.monotonic()
        self.address = address
        self.runtime_env = runtime_env
        self.guardian = _Guardian() if address is None else None
        self.environment: _RayEnvironment | None = _RayEnvironment(owned=address is None)
        self.token = self.environment.token  # the actors' environment holds it: mask it in their logs
        self.held: list[str] = []  # Ray's lines while connecting: written to job.log by take_held()
        try:
            self.owned = connect(address, runtime_env, self.held)
        except BaseException:
            for line in self.held:  # no job.log yet: never the user's terminal either
                log.debug("ray: %s", line)
            self.close()
            raise
        if self.guardian is not None:
            self.guardian.watch(_instance_pids())
        self.seconds = time.monotonic() - began
        atexit.register(self.close)  # a run that never made its executor (a job already complete)

    def take_held(self) -> None:
        """Ray's lines of the connect, to the log (job.log, once the run has made it)."""
        for line in self.held:
            log.warning("ray: %s", line)
        self.held = []

    def close(self) -> None:
        """Leave the cluster; our own instance stops, and its guardian goes; the caller's environment
        comes back."""
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - the session may be half made
            pass
        if self.guardian is not None:
            self.guardian.dismiss()
            self.guardian = None
        if self.environment is not None:
            self.environment.restore()
            self.environment = None
        atexit.unregister(self.close)


_session: _Session | None = None


def open_session(address: str | None, runtime_env: dict[str, Any] | None = None) -> _Session:
    """The run's session, made on first use (by :meth:`RayExecutor.prepare`, else by ``start()``);
    on the second use (``start()``, job.log made) Ray's lines of the connect go to the log."""
    global _session
    if (_session is None or (_session.address, _session.runtime_env) != (address, runtime_env)
            or not ray.is_initialized()):
        close_session()
        _session = _Session(address, runtime_env)
    else:
        _session.take_held()
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
    node (Ray's ``working_dir``: uploaded once, at most 500 MiB, unpacked as each actor's first cwd),
    without the output folder, the input folders, state, caches and virtual environments under it."""
    if spec.node_count <= 1 or spec.shared_filesystem:
        return None
    source = Path(spec.source_directory).absolute()
    excludes = [STATE_DIR, "__pycache__", ".git", ".venv*"]
    folders = [output_folder(spec, None), *_output_folders_in(source)]
    folders += [Path(_static_part(path)).absolute() for item in spec.inputs for path in item.path if not is_url(path)]
    for folder in folders:
        if folder != source and folder.is_relative_to(source):
            excludes.append("/" + folder.relative_to(source).as_posix())
    return {"working_dir": str(spec.source_directory), "excludes": excludes}


def _output_folders_in(source: Path, depth: int = 3) -> list[Path]:
    """Earlier runs' output folders (they hold ``.batchinfer``) at most ``depth`` levels under ``source``."""
    found = []
    for root, dirs, _ in os.walk(source):
        level = len(Path(root).relative_to(source).parts)
        if STATE_DIR in dirs:
            found.append(Path(root))
        dirs[:] = [] if level >= depth or STATE_DIR in dirs else [
            d for d in dirs if d not in ("__pycache__", ".git") and not d.startswith(".venv")]
    return found


def _static_part(path: str) -> str:
    """The folder of an input path before any glob character (the path itself if it is a folder)."""
    static = path.split("*")[0].split("?")[0].split("[")[0]
    return static if os.path.isdir(static) else os.path.dirname(static) or "."


def requested_per_node(spec: Any) -> int | None:
    """``process_count_per_node`` if the user set it; None: as many as fit."""
    return spec.process_count_per_node if "process_count_per_node" in spec.model_fields_set else None


def why(exc: BaseException) -> str:
    """A Ray error in a few words (its first line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
