"""``azureml.core.Run`` offline: what ``Run.get_context()`` gives a script that batchinfer runs.

In a worker, the run is the job: metrics and tags go to ``<logs>/metrics.jsonl``, one
JSON object per line, each written with one ``O_APPEND`` write so that the lines of
several workers never interleave; values are redacted as every log line is.
``upload_file`` copies into ``<logs>/uploads/<name>``: the name must stay inside that
folder, and nothing is written through a symbolic link (each folder is opened with
``O_NOFOLLOW``, the file is written beside its name and renamed over it).

Outside a worker (a pipeline's command step) the run is offline: each record is one
line on stderr, and uploads stay where they are, unless ``BATCHINFER_LOG_DIR`` names
a folder to use as the worker's log folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from batchinfer import _runtime
from batchinfer._compat.cloud_only import ApiObject, NoLocalMeaning
from batchinfer.redact import redact_mapping, redact_text

METRICS_FILE = "metrics.jsonl"
UPLOADS_DIR = "uploads"
LOG_DIR_VARIABLE = "BATCHINFER_LOG_DIR"


def _log_dir() -> str | None:
    context = _runtime.current_context()
    return context.log_dir if context is not None else os.environ.get(LOG_DIR_VARIABLE) or None


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy and pandas values become Python ones, the rest strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    for method in ("tolist", "item"):  # numpy arrays and scalars, pandas Series
        if callable(getattr(value, method, None)):
            try:
                return _plain(getattr(value, method)())
            except (TypeError, ValueError):
                pass
    return str(value)


class _Sink:
    """Where this process's records go: the metrics file (kept open, appended to) or stderr."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.opening = threading.Lock()  # a script's threads may log at once: open the file once

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        folder = _log_dir()
        if folder is None:
            sys.stderr.write(f"azureml run: {line.decode('utf-8')}")
            sys.stderr.flush()
            return
        with self.opening:
            if self.fd is None:
                from batchinfer.output import open_own_file  # refuses a link or a FIFO planted at the name

                os.makedirs(folder, exist_ok=True)
                self.fd = open_own_file(Path(folder) / METRICS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                        private=False)
        written = os.write(self.fd, line)  # one write per record: O_APPEND keeps workers' lines whole
        if written != len(line):
            raise OSError(errno.ENOSPC, f"only {written} of {len(line)} bytes of a metric were written")


_sink = _Sink()


def _safe_parts(name: str, api: str) -> list[str]:
    """The components of an upload name that must stay inside the uploads folder."""
    if not isinstance(name, str) or not name.strip() or "\0" in name or name.startswith("/"):
        raise ValueError(f"{api}: name {name!r} must be a relative path such as 'outputs/model.pkl'")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{api}: name {name!r} must stay inside the run's uploads (no '..')")
    return parts


def _open_folders(root: str, parts: list[str], api: str) -> int:
    """Open ``root/parts...`` (made as needed), never following a link; return the last folder's fd."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValueError(f"{api}: {part!r} in the uploads folder is a link or a file, not a folder; "
                                     "batchinfer never writes through a link") from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_into_uploads(name: str, source: Any, api: str) -> str:
    """Copy ``source`` (a path or a readable binary stream) to ``<logs>/uploads/<name>``; return that path."""
    folder = _log_dir()
    assert folder is not None
    parts = _safe_parts(name, api)
    os.makedirs(folder, exist_ok=True)
    fd = _open_folders(folder, [UPLOADS_DIR, *parts[:-1]], api)
    temporary = f".{parts[-1]}.{uuid.uuid4().hex}.part"
    try:
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                      dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as target:
                if isinstance(source, (str, os.PathLike)):
                    with open(source, "rb") as stream:
                        shutil.copyfileobj(stream, target)
                else:
                    data = source.read()
                    target.write(data.encode("utf-8") if isinstance(data, str) else data)
            os.replace(temporary, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)  # replaces a link, never follows it
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    return os.path.join(folder, UPLOADS_DIR, *parts)


class _LocalWorkspace(ApiObject):
    """``run.experiment.workspace``: only something to hand to ``Dataset.get_by_name`` or ``Model(...)``."""

    _api = "azureml.core.Workspace"
    name = "local"

    def __repr__(self) -> str:
        return "Workspace(local batchinfer run)"


class _LocalExperiment(ApiObject):
    """``run.experiment``: a name and the local workspace."""

    _api = "azureml.core.Experiment"

    def __init__(self, name: str) -> None:
        self.name = name
        self.workspace = _LocalWorkspace()

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, local batchinfer run)"


class Run(ApiObject):
    """The part of ``azureml.core.Run`` with a local meaning; get one with ``Run.get_context()``."""

    _api = "azureml.core.Run"
    _hint = ("a local run records what Run.log, log_list, log_row, log_table, log_image, tag, set_tags and "
             "upload_file are given (in logs/metrics.jsonl and logs/uploads/) and reads nothing back from Azure ML")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NoLocalMeaning("azureml.core.Run(experiment, run_id)",
                             "use Run.get_context() for the run the script is part of")

    @classmethod
    def _local(cls, run_id: str, parent: Run | None) -> Run:
        run = object.__new__(cls)
        run.id = run_id
        run._parent = parent
        run._tags = {}
        run._properties = {}
        return run

    @classmethod
    def get_context(cls, allow_offline: bool = True, used_for_context_manager: bool = False, **kwargs: Any) -> Run:
        """This process's run: the job's run in a batchinfer worker, an offline run elsewhere."""
        global _current
        if _current is None:
            context = _runtime.current_context()
            where = context.worker_name if context is not None else f"offline-{os.getpid()}"
            _current = cls._local(f"batchinfer_{where}", cls._local("batchinfer_job", None))
        return _current

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, local batchinfer run)"

    # --- what the run is part of
    @property
    def parent(self) -> Run | None:
        """The job's run (metrics logged there are marked ``"run": "batchinfer_job"``)."""
        return self._parent

    @property
    def experiment(self) -> _LocalExperiment:
        """A local experiment whose ``workspace`` can be handed to ``Dataset.get_by_name`` and ``Model``."""
        return _LocalExperiment("batchinfer")

    @property
    def name(self) -> str:
        return self.id

    display_name = name

    @property
    def status(self) -> str:
        return "Running"

    @property
    def input_datasets(self) -> dict[str, Any]:
        """The job spec's ``side_inputs``, by name, as local datasets."""
        from batchinfer._compat.azure_data import LocalDataset

        context = _runtime.current_context()
        side_inputs = context.side_inputs if context is not None else {}
        return {name: LocalDataset.from_path(path, name) for name, path in side_inputs.items()}

    # --- metrics
    def _record(self, kind: str, name: str, value: Any, **extra: Any) -> None:
        context = _runtime.current_context()
        name = str(name)
        record = {"time": round(time.time(), 6), "run": self.id, "worker": context.worker_name if context else None,
                  "kind": kind, "name": redact_text(name), "value": redact_mapping({name: _plain(value)})[name]}
        record.update({k: redact_text(str(v)) if isinstance(v, str) else _plain(v) for k, v in extra.items()
                       if v not in (None, "")})
        _sink.write(record)

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Record one value of the metric ``name``."""
        self._record("metric", name, value, description=description, step=step)

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        """Record a list of values of the metric ``name``."""
        self._record("list", name, list(value), description=description)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Record one row (its columns as keyword arguments) of the table ``name``."""
        self._record("row", name, kwargs, description=description)

    def log_table(self, name: str, value: dict[str, Any], description: str = "") -> None:
        """Record the table ``name`` (a dict of columns)."""
        self._record("table", name, dict(value), description=description)

    def log_image(self, name: str, path: str | None = None, plot: Any = None, description: str = "") -> None:
        """Keep an image (a file, or a matplotlib figure) under ``uploads/images/`` and record where."""
        if (path is None) == (plot is None):
            raise ValueError("azureml.core.Run.log_image: give exactly one of path= and plot=")
        if _log_dir() is None:
            self._record("image", name, str(path) if path is not None else "(a plot, not kept offline)",
                         description=description)
            return
        if path is not None:
            stored = _copy_into_uploads(f"images/{os.path.basename(str(path))}", path, "azureml.core.Run.log_image")
        else:
            import io

            buffer = io.BytesIO()
            figure = plot.gcf() if hasattr(plot, "gcf") else plot  # matplotlib.pyplot or a Figure
            figure.savefig(buffer, format="png")
            buffer.seek(0)
            stored = _copy_into_uploads(f"images/{name}.png", buffer, "azureml.core.Run.log_image")
        self._record("image", name, os.path.relpath(stored, _log_dir()), description=description)

    # --- tags and properties (this process's own: each worker has its run object)
    def tag(self, key: str, value: Any = None) -> None:
        """Set a tag (recorded in the metrics file; ``get_tags()`` returns this process's tags)."""
        value = "" if value is None else str(value)
        self._tags[str(key)] = value
        self._record("tag", key, value)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set several tags."""
        for key, value in tags.items():
            self.tag(key, value)

    def get_tags(self) -> dict[str, str]:
        """The tags this process set."""
        return dict(self._tags)

    @property
    def tags(self) -> dict[str, str]:
        return self.get_tags()

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties (recorded like tags)."""
        for key, value in properties.items():
            self._properties[str(key)] = str(value)
            self._record("property", key, str(value))

    def get_properties(self) -> dict[str, str]:
        """The properties this process added."""
        return dict(self._properties)

    @property
    def properties(self) -> dict[str, str]:
        return self.get_properties()

    # --- files
    def upload_file(self, name: str, path_or_stream: Any, datastore_name: str | None = None) -> str:
        """Copy a file (or a binary stream) to ``<logs>/uploads/<name>``; return where it went."""
        if _log_dir() is None:
            sys.stderr.write(f"azureml run: upload_file({name!r}): offline run, the file is not copied\n")
            return str(path_or_stream) if isinstance(path_or_stream, (str, os.PathLike)) else ""
        stored = _copy_into_uploads(name, path_or_stream, "azureml.core.Run.upload_file")
        self._record("upload", name, os.path.relpath(stored, _log_dir()))
        return stored

    def upload_files(self, names: list[str], paths: list[str], return_artifacts: bool = False,
                     timeout_seconds: int | None = None, datastore_name: str | None = None) -> list[str]:
        """``upload_file`` for each pair of ``names`` and ``paths``."""
        if len(names) != len(paths):
            raise ValueError("azureml.core.Run.upload_files: names and paths differ in length")
        return [self.upload_file(n, p) for n, p in zip(names, paths)]

    def upload_folder(self, name: str, path: str, datastore_name: str | None = None) -> list[str]:
        """Copy every file under the folder ``path`` to ``<logs>/uploads/<name>/...``."""
        stored = []
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for file in sorted(files):
                relative = os.path.relpath(os.path.join(folder, file), path)
                stored.append(self.upload_file(f"{name.rstrip('/')}/{relative}", os.path.join(folder, file)))
        return stored

    # --- the run's life: the job decides it, so these only flush
    def complete(self, _set_status: bool = True) -> None:
        """Nothing to do locally: batchinfer ends the run with the job."""

    def flush(self, timeout_seconds: int = 300) -> None:
        """Records are written as they come: nothing to flush."""


_current: Run | None = None
