"""Real object-store servers on 127.0.0.1 for the tests: moto's S3 server, Azurite, a plain HTTP server.

Each server is started by a session fixture in ``tests/conftest.py`` and stopped at the end of the
session. Nothing listens on any other address; Azurite's telemetry is off. ``tests/install.sh``
installs what they need (``moto[server]`` and the fsspec back-ends in .venv, Azurite from npm in
``.tools/``), so CI never skips these tests.

Each server gives the ``storage_options`` that fsspec needs to reach it, and a fresh bucket or
container per test (``new_bucket``), so tests never see each other's objects.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
S3_REGION = "eu-west-1"  # us-east-1 breaks s3fs's bucket creation against moto
# Azurite's well-known development account (public, documented by Microsoft: not a secret)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class S3Server:
    """moto's standalone S3 server; ``storage_options`` are s3fs's keyword arguments for it."""

    endpoint_url: str
    key: str = "test-access-key"
    secret: str = "test-secret-key"
    _server: Any = None

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": self.key, "secret": self.secret,
                "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": S3_REGION}}

    @property
    def env(self) -> dict[str, str]:
        """The SDK's usual environment variables, for jobs whose spec names no storage_options."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": S3_REGION}

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def new_bucket(self) -> str:
        """A new empty bucket; returns its name (use ``s3://<name>/...``)."""
        name = f"bi-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    @classmethod
    def start(cls) -> S3Server:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return cls(endpoint_url=f"http://{host}:{port}", _server=server)

    def stop(self) -> None:
        self._server.stop()


def azurite_command() -> str | None:
    """The azurite-blob launcher: the project's own (tests/install.sh puts it in .tools/), else on PATH."""
    own = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    return str(own) if own.exists() else shutil.which("azurite-blob")


@dataclass
class AzuriteServer:
    """Azurite's Blob service; ``storage_options`` are adlfs's keyword arguments for it."""

    port: int
    location: Path
    _proc: subprocess.Popen | None = None
    account_key: str = AZURITE_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def connection_string(self, key: str | None = None) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key or self.account_key};"
                f"BlobEndpoint={self.blob_endpoint};")

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string()}

    @property
    def env(self) -> dict[str, str]:
        """adlfs reads the connection string from this variable when storage_options name none."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def fs(self) -> Any:
        import adlfs

        return adlfs.AzureBlobFileSystem(skip_instance_cache=True, **self.storage_options)

    def new_bucket(self) -> str:
        """A new empty container; returns its name (use ``az://<name>/...`` or ``abfs://<name>/...``)."""
        name = f"bi-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    @classmethod
    def start(cls, command: str, location: Path) -> AzuriteServer:
        port = free_port()
        proc = subprocess.Popen(
            [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
             "--silent", "--disableTelemetry", "--skipApiVersionCheck"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_port(port, proc, "azurite-blob")
        except BaseException:
            proc.kill()
            raise
        return cls(port=port, location=location, _proc=proc)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:  # the tests' output stays readable
        pass


@dataclass
class HttpServer:
    """A plain HTTP server of one folder (``root``): files put there are at ``url + '/' + name``."""

    root: Path
    url: str
    _server: Any = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def start(cls, root: Path) -> HttpServer:
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        return cls(root=root, url=f"http://127.0.0.1:{server.server_address[1]}", _server=server, _thread=thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def no_proxy_env() -> dict[str, str]:
    """Loopback never goes through a proxy that the machine's environment may name."""
    return {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def upload_tree(fs: Any, local: Path, remote: str) -> None:
    """Copy the files under ``local`` to ``remote`` (``bucket/prefix``), keeping their relative paths."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())



@dataclass
class Store:
    """One of the servers above, seen the same way by a test that runs on each of them."""

    kind: str  # "s3" or "azurite"
    server: Any

    @property
    def scheme(self) -> str:
        return "s3" if self.kind == "s3" else "az"

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.server.storage_options

    @property
    def env(self) -> dict[str, str]:
        return self.server.env

    def fs(self) -> Any:
        return self.server.fs()

    def new_bucket(self) -> str:
        return self.server.new_bucket()

    def url(self, bucket: str, path: str = "") -> str:
        return f"{self.scheme}://{bucket}/{path}".rstrip("/")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    """GET (with or without a ``Range: bytes=a-b`` header) and HEAD of the files of ``server.root``."""

    protocol_version = "HTTP/1.1"
    server: Any  # the RangeHttpServer's ThreadingHTTPServer, with ``.owner`` set

    def log_message(self, *_args: Any) -> None:
        pass

    def _file(self) -> tuple[str, Path | None]:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = self.server.owner.root / name
        return name, path if path.is_file() else None

    def _refuse(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        name, path = self._file()
        if path is None:
            return self._refuse(404)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        name, path = self._file()
        owner.gets_started(name)
        if owner.should_fail(name):
            return self._refuse(503)
        if path is None:
            return self._refuse(404)
        data = path.read_bytes()
        start, end = 0, len(data)
        ranged = self.headers.get("Range")
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start, end = int(first), min(len(data), int(last) + 1 if last else len(data))
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        owner.count(name, end - start)
        self.wfile.write(data[start:end])


class RangeHttpServer:
    """An HTTP server of one folder that answers Range requests and counts what it serves.

    ``served[name]``: the bytes sent for that file (bodies only); ``fail(name, times)``: its next
    ``times`` GETs get 503 (-1: all of them); ``hold(name)``: its next GET waits until
    :meth:`release` (``started(name)`` is set when that GET arrives), so that a test can act
    while a download is under way, without sleeping.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.served: dict[str, int] = {}
        self.gets: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._holds: dict[str, threading.Event] = {}
        self._started: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
        self._server.daemon_threads = True
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def count(self, name: str, sent: int) -> None:
        with self._lock:
            self.served[name] = self.served.get(name, 0) + sent

    def fail(self, name: str, times: int) -> None:
        with self._lock:
            self._failures[name] = times

    def should_fail(self, name: str) -> bool:
        with self._lock:
            left = self._failures.get(name, 0)
            if left:
                self._failures[name] = left - 1 if left > 0 else left
            return bool(left)

    def hold(self, name: str) -> threading.Event:
        """Hold the next GET of ``name``; returns the event set when it arrives."""
        with self._lock:
            self._holds[name] = threading.Event()
            self._started[name] = threading.Event()
            return self._started[name]

    def release(self, name: str) -> None:
        """Let the held GET of ``name`` go on (if the client is still there)."""
        with self._lock:
            event = self._holds.pop(name, None)
        if event is not None:
            event.set()

    def gets_started(self, name: str) -> None:
        with self._lock:
            self.gets[name] = self.gets.get(name, 0) + 1
            held, started = self._holds.get(name), self._started.pop(name, None)
        if started is not None:  # the first GET since hold(): later ones are served at once
            started.set()
            held.wait(120)  # bounded: a test that never releases does not hang the session

    def stop(self) -> None:
        for name in list(self._holds):
            self.release(name)
        self._server.shutdown()
        self._server.server_close()


@dataclass
class GcsServer:
    """gcp-storage-emulator (in memory, in this process); ``storage_options`` are gcsfs's keyword arguments.

    gcsfs 2026 first asks a bucket's type over gRPC, which the emulator does not serve (each
    call waits 60 s, then falls back): ``env`` turns that off, as a job run against it must.
    """

    endpoint_url: str
    _server: Any = None

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": "batchinfer-tests"}

    @property
    def env(self) -> dict[str, str]:
        return {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "STORAGE_EMULATOR_HOST": self.endpoint_url}

    def fs(self) -> Any:
        import gcsfs

        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options)

    def new_bucket(self) -> str:
        """A new empty bucket; returns its name (use ``gs://<name>/...``)."""
        name = f"bi-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    @classmethod
    def start(cls) -> GcsServer:
        import os

        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read when gcsfs is imported
        from gcp_storage_emulator.server import create_server

        port = free_port()
        server = create_server("127.0.0.1", port, in_memory=True)
        server.start()
        _wait_for_port(port, None, "gcp-storage-emulator")
        return cls(endpoint_url=f"http://127.0.0.1:{port}", _server=server)

    def stop(self) -> None:
        self._server.stop()
