"""The output folder's memory of a job: its fingerprint, and whether to reuse, resume or refuse.

A job that ran in a folder leaves ``.batchinfer/job.json`` (its fingerprint)
and ``summary.json``; the next ``batchinfer run`` on that folder reuses a
finished job, resumes an unfinished one, and refuses (exit 2) a different one.
The folder is locked (:mod:`batchinfer.lock`) before anything in it changes,
and only what batchinfer wrote there is ever removed (:mod:`batchinfer.manifest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from batchinfer import __version__
from batchinfer.entry import EntryScript
from batchinfer.errors import OutputError
from batchinfer.inputs import InputPlan, MiniBatch
from batchinfer.layout import SUMMARY_FILE
from batchinfer.lock import OutputLock
from batchinfer.manifest import Manifest, check_folder, names_for, seal_state
from batchinfer.output import STATE_DIR
from batchinfer.redact import MASK, is_secret_env_name, mask_secrets, redact_url
from batchinfer.ports import FreshPorts
from batchinfer.spec import JobSpec, is_url
from batchinfer.statefiles import (
    JOB_FILE,
    JOB_FORMAT,
    private_dir,
    read_job_file,
    read_summary,
    shown,
    write_private_json,
)

# keys that do not change which rows a job produces: changing them keeps resume possible
NOT_FINGERPRINTED = {
    "output", "node_count", "process_count_per_node", "backend", "ray_address", "num_cpus_per_process",
    "num_gpus_per_process", "shared_filesystem",
    "logging_level", "allow_reuse", "run_invocation_timeout",
}
FINISHED = ("succeeded", "failed")


def output_folder(spec: JobSpec, override: str | None) -> Path:
    """The output folder: ``--output``, else the spec's ``output``, else ``./outputs/<name>``."""
    raw = override or (spec.output.path if spec.output else None)
    if raw and is_url(raw):
        # a URL's run folder is a staging folder of batchinfer.remote_output, never a path made from it
        raise OutputError(f"output {raw!r} is a URL, not a local folder", hint="give a local folder")
    path = Path(raw) if raw else Path("outputs") / spec.name
    return path.absolute()


def _input_roots(spec: JobSpec) -> set[str]:
    """Local folders that hold inputs (not code): the fingerprint does not walk them."""
    roots = set()
    for spec_input in spec.inputs:
        for path in spec_input.path:
            if not is_url(path):
                static = path.split("*")[0].split("?")[0].split("[")[0]
                roots.add(os.path.normpath(static if os.path.isdir(static) else os.path.dirname(static)))
    return roots


def _stat_line(path: str) -> str:
    try:
        if os.path.isdir(path):
            stats = [os.stat(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs]
            return f"{path}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}\n"
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n"
    except OSError:
        return f"{path}:missing\n"


def _code_digest(path: str) -> bytes:
    """The hash of one Python file of ``source_directory``; a FIFO, device or unreadable file named
    ``*.py`` is not code the workers import as a module here, and must never block or crash the run."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b"not a regular file"
        return hashlib.sha256(Path(path).read_bytes()).digest()
    except OSError as exc:
        return f"unreadable: {exc.errno}".encode()


def _hashed_url(path: str) -> str:
    """What the fingerprint hashes of a path: a URL redacted (a SAS or presigned query's signature, a
    ``user:pass@``: credentials that rotate), a local path as it is."""
    return redact_url(path) if is_url(path) else path


def _without_credentials(dump: dict[str, Any]) -> dict[str, Any]:
    """The spec's dump without what rotates (credentials): ``storage_options`` as if empty, the values of
    environment variables named like credentials as ``***``, the URLs of inputs, models and side inputs
    redacted (a job without any of them hashes as it always did)."""
    for spec_input in dump.get("inputs", []):
        spec_input["storage_options"] = {}
        spec_input["path"] = [_hashed_url(p) for p in spec_input.get("path", [])]
    for key in ("models", "side_inputs"):
        named = dump.get(key) or {}
        for name, path in named.items():
            if isinstance(path, str):
                named[name] = _hashed_url(path)
    environment = dump.get("environment_variables") or {}
    for name in environment:
        if is_secret_env_name(name):
            environment[name] = MASK
    return dump


def fingerprint(spec: JobSpec, entry: EntryScript, output: Path, data_dir: Path | None = None,
                remote_versions: Mapping[str, str] | None = None) -> str:
    """A hash of what decides the job's rows: the spec (minus run-time settings), the entry script
    and the other Python files of ``source_directory``, and the files named in models and side_inputs.

    A model or side input at a URL counts by its version in ``remote_versions`` (``{url: version}``,
    from :func:`batchinfer.modelcache.resolve`: the store's metadata, nothing downloaded); its
    ``storage_options`` (credentials) never count.

    Data files under ``source_directory`` (its inputs, the output folder, logs) are not part of it,
    so running a job from its own folder, or redirecting stderr there, does not change its identity.
    """
    digest = hashlib.sha256()
    dump = json.dumps(_without_credentials(spec.model_dump(mode="json", exclude=NOT_FINGERPRINTED)), sort_keys=True)
    # a credential that other values expand (an argument or environment variable holding ${SECRET}) rotates too
    digest.update(mask_secrets(dump).encode())
    digest.update(Path(entry.path).read_bytes())
    if data_dir is not None:  # the journal's offsets are those of the row file there
        digest.update(b"data_dir:" + os.fsencode(data_dir))
    skip = _input_roots(spec) | {str(output)}
    for root, dirs, files in os.walk(entry.source_directory):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d != "__pycache__" and os.path.join(root, d) not in skip
            and not os.path.exists(os.path.join(root, d, STATE_DIR))  # another job's output folder
        )
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                digest.update(os.fsencode(os.path.relpath(path, entry.source_directory)))
                digest.update(_code_digest(path))
    for named in (spec.models, spec.side_inputs):
        for name, location in sorted(named.items()):
            path = location.path
            digest.update(name.encode())
            if is_url(path):
                version = (remote_versions or {})[path]  # a KeyError: resolve() not called
                digest.update(f"{_hashed_url(path)}\n{version}".encode())
            else:
                digest.update(_stat_line(path).encode())
    return digest.hexdigest()[:16]


def inputs_digest(batches: Iterable[MiniBatch]) -> str:
    """One hash over the digests of every listed mini-batch: the job's input listing."""
    digest = hashlib.blake2b(digest_size=16)
    for batch in batches:
        digest.update(batch.digest.encode())
    return digest.hexdigest()


class DigestingStream:
    """Passes listed mini-batches through, hashing them on the way (no second listing needed)."""

    def __init__(self, batches: Iterator[MiniBatch]) -> None:
        self._batches = batches
        self._digest = hashlib.blake2b(digest_size=16)
        self.done = False

    def __iter__(self) -> DigestingStream:
        return self

    def __next__(self) -> MiniBatch:
        try:
            batch = next(self._batches)
        except StopIteration:
            self.done = True
            raise
        self._digest.update(batch.digest.encode())
        return batch

    @property
    def digest(self) -> str | None:
        """The listing's hash, once it has been listed to the end."""
        return self._digest.hexdigest() if self.done else None


@contextlib.contextmanager
def output_errors(folder: Path) -> Iterator[None]:
    """Turn an OSError met while preparing ``folder`` (read-only, a file in the path, no space,
    a name too long) into one line naming the folder."""
    try:
        yield
    except OSError as exc:
        where = f" ({shown(exc.filename)})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise OutputError(
            f"output {shown(folder)} cannot be used: {exc.strerror or shown(exc)}{where}",
            hint="choose a folder you can write to with --output: check its permissions, the free space, "
            "and that no part of its path is a file",
        ) from None


def open_output(folder: Path) -> OutputLock:
    """Check that ``folder`` may be used, then lock it: nothing in it is changed before the lock is held."""
    with output_errors(folder):
        check_folder(folder)
        return OutputLock.acquire(folder)


def prepare_output(
    folder: Path, spec: JobSpec, print_: str, restart: bool, plan: InputPlan | None = None, retry_failed: bool = False,
    to_stdout: bool = False, data_dir: Path | None = None, port_dirs: tuple[Path, ...] = (),
    fresh_ports: FreshPorts | None = None,
) -> dict[str, Any] | None:
    """Make the folder ready (its lock held, see :func:`open_output`); return the finished job's
    summary when it can be reused as is.

    Only what batchinfer wrote is removed (``--restart``, ``allow_reuse: false``) or overwritten:
    see :mod:`batchinfer.manifest`. A pipeline step's ``fresh_ports`` are emptied (batchinfer's) or
    checked (the user's) when the job starts afresh, never when it resumes: see :mod:`batchinfer.ports`.
    """
    with output_errors(folder):
        reused = _prepare(folder, spec, print_, restart, plan, retry_failed, to_stdout, data_dir,
                          fresh_ports or FreshPorts())
        for port in (data_dir, *port_dirs) if data_dir is not None else port_dirs:
            port.mkdir(parents=True, exist_ok=True)  # a pipeline step's ports (a reused job's too: they may be read)
        return reused


def _prepare(
    folder: Path, spec: JobSpec, print_: str, restart: bool, plan: InputPlan | None, retry_failed: bool,
    to_stdout: bool, data_dir: Path | None, ports: FreshPorts,
) -> dict[str, Any] | None:
    state = folder / STATE_DIR
    job_file = state / JOB_FILE
    old = read_job_file(job_file, damaged_ok=restart)
    legacy = os.path.lexists(job_file) and (old is None or old.format < JOB_FORMAT)
    summary = read_summary(folder / SUMMARY_FILE) if old is not None else None
    finished = summary is not None and summary["status"] in FINISHED
    if old is not None and old.fingerprint != print_ and not restart:
        raise OutputError(
            f"output {shown(folder)} holds a different job (its spec, script or code changed since it ran there)",
            hint="use --restart to start over in that folder, or choose another --output",
        )
    if retry_failed and not finished:
        raise OutputError(
            f"--retry-failed needs a finished job in {shown(folder)}",
            hint="run the job to the end first; --retry-failed then runs only its failed items again",
        )
    private_dir(state)  # made by open_output already; here too for callers that prepare without a lock
    manifest = Manifest.load(folder, spec, legacy, data_dir)
    names = names_for(spec, to_stdout, data_dir is not None)
    manifest.check(names)  # before clearing: a refused run leaves the folder as it was
    fresh = old is None
    if restart:
        ports.check()
        manifest.clear()
        fresh = True
    elif not retry_failed and finished and summary is not None and summary.get("complete", True):
        if not spec.allow_reuse:
            ports.check()
            manifest.clear()
            fresh = True
        elif plan is not None and summary.get("inputs_digest") != inputs_digest(plan.mini_batches()):
            raise OutputError(
                f"the inputs changed since the job in {shown(folder)} finished",
                hint="use --restart to score them again in that folder, or choose another --output",
            )
        else:
            return summary
    if fresh:  # as Azure gives every run a fresh output; a resumed job keeps what it wrote so far
        ports.check()
        ports.empty()
    manifest.claim(names)
    seal_state(folder)
    (folder / "logs").mkdir(exist_ok=True)
    job = {"format": JOB_FORMAT, "fingerprint": print_, "name": spec.name, "version": __version__}
    write_private_json(job_file, job)
    return None
