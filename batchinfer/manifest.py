"""What batchinfer wrote in an output folder: the only files it may ever remove or overwrite.

The output folder is shared with the user and the entry script (a ``summary_only`` script
writes its results beside batchinfer's). ``.batchinfer/manifest.json`` lists the names that
batchinfer claimed there. A name is claimed before its file is first created, and only when
nothing is there under that name yet; a name held by a file batchinfer did not write is a
conflict (exit 2), never overwritten. ``--restart`` and ``allow_reuse: false`` remove the
claimed files and nothing else. Folders are never removed, except batchinfer's own scratch
trees under ``.batchinfer/`` (Parquet parts, workers' temporary files).

A pipeline step writes its rows in its output port (``RunOptions.data_dir``), outside the run
folder's own names: that one file is claimed as ``@data/<name>``, and the manifest records the
port's absolute folder with it (``data_dir``). When the port moves (its ``path:`` changed), the
old claim stands for the file in the recorded folder (``--restart`` removes it there, and only
there) and the name is claimed afresh in the new folder, where a file of the user's is refused.
The script's files beside the row file are not batchinfer's to remove here (see :mod:`batchinfer.ports`).

A folder written by batchinfer 0.1.0 has no manifest: its claims are the names that version
wrote, where they exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pydantic import Field

from batchinfer.errors import OutputError
from batchinfer.eventlog import EVENTS_FILE
from batchinfer.layout import LOGS_DIR, REPORT_FILE, REPORT_MARKER, REPORT_MARKER_WITHIN, STATE_DIR, SUMMARY_FILE
from batchinfer.spec import JobSpec
from batchinfer.statefiles import JOB_FILE, ReadBack, read_json, seal, shown, why_invalid, write_private_json
from batchinfer.trylog import ERRORS_FILE, SLOWEST_FILE, TRIES_FILE

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SUMMARY = SUMMARY_FILE
LOG_FILES = ("job.log", ERRORS_FILE, TRIES_FILE, "failed_items.txt", "readme.txt",
             "metrics.jsonl", EVENTS_FILE, SLOWEST_FILE)  # metrics.jsonl: what scripts give azureml.core.Run.log* (batchinfer/_compat)
STATE_FILES = (JOB_FILE, "journal.jsonl", "status.json", "lock", MANIFEST)
TREES = (f"{STATE_DIR}/parts", f"{STATE_DIR}/tmp")
# created before the manifest can name them (the lock comes first of all), and kept when clearing:
# job.json is replaced rather than removed, so the folder never stops being batchinfer's
KEPT = {f"{STATE_DIR}/lock", f"{STATE_DIR}/{MANIFEST}", f"{STATE_DIR}/{JOB_FILE}"}
_PLAIN = r"(?!\.\.?(?:/|$))[^/\x00]+"  # one path component, not . or ..
DATA_PREFIX = "@data/"  # a name in the step's output port, not in the run folder
_CLAIMABLE = re.compile(rf"^({_PLAIN}|logs/{_PLAIN}|{re.escape(STATE_DIR)}/{_PLAIN}|{DATA_PREFIX}{_PLAIN})$")
_WORKER_LOG = re.compile(r"^worker-\d+\.log$")


def names_for(spec: JobSpec, to_stdout: bool, in_data_dir: bool = False) -> set[str]:
    """Every file a run of ``spec`` may write in its output folder (relative paths); with
    ``in_data_dir`` the row file is in the step's output port (``@data/<name>``)."""
    names = {SUMMARY, SUMMARY + ".tmp"}
    if spec.output_action == "append_row" and not to_stdout:
        prefix = DATA_PREFIX if in_data_dir else ""
        names |= {prefix + spec.append_row_file_name, prefix + spec.append_row_file_name + ".tmp"}
    names |= {f"logs/{name}" for name in LOG_FILES}
    names |= {f"logs/worker-{i}.log" for i in range(spec.worker_count)}
    names |= {f"{STATE_DIR}/{name}" for name in STATE_FILES}
    names |= {f"{STATE_DIR}/{name}.tmp" for name in (JOB_FILE, "status.json", MANIFEST, "journal.jsonl")}
    return names


class _ManifestFile(ReadBack):
    format: int = Field(ge=1)
    files: list[str] = Field(max_length=1_000_000)
    trees: list[str] = Field(max_length=len(TREES))
    data_dir: Optional[str] = Field(None, max_length=4096)  # where the @data/ claims are (absolute)


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


@dataclass
class Manifest:
    """The names batchinfer claimed in one output folder (files, and scratch trees)."""

    folder: Path
    files: set[str] = field(default_factory=set)
    trees: set[str] = field(default_factory=set)
    data_dir: Path | None = None  # this run's output port
    claimed_in: Path | None = None  # the output port the @data/ claims were made in

    @property
    def moved(self) -> bool:
        """The output port is not the one the row file was claimed in (its ``path:`` changed)."""
        return self.claimed_in != self.data_dir and any(n.startswith(DATA_PREFIX) for n in self.files)

    def where(self, name: str, claimed: bool = True) -> Path | None:
        """The file a name stands for: a claimed ``@data/`` name in the port it was claimed in, a name
        about to be claimed (``claimed=False``) in this run's port (None: no such port)."""
        if name.startswith(DATA_PREFIX):
            port = self.claimed_in if claimed else self.data_dir
            return port / name[len(DATA_PREFIX):] if port is not None else None
        return self.folder / name

    @property
    def path(self) -> Path:
        """``.batchinfer/manifest.json``."""
        return self.folder / STATE_DIR / MANIFEST

    @classmethod
    def load(cls, folder: Path, spec: JobSpec, legacy: bool, data_dir: Path | None = None) -> Manifest:
        """Read the manifest (validated: a forged one must not make batchinfer remove other files);
        without one, ``legacy`` (a 0.1.0 folder) claims what that version wrote, else just the lock."""
        path = folder / STATE_DIR / MANIFEST
        try:
            doc = _ManifestFile.model_validate(read_json(path))
        except FileNotFoundError:
            if legacy:
                return cls._legacy(folder, spec)
            return cls(folder, {f"{STATE_DIR}/lock"}, data_dir=data_dir, claimed_in=data_dir)
        except (OSError, ValueError) as exc:
            raise _damaged(path, why_invalid(exc)) from None
        if doc.format > MANIFEST_FORMAT:
            raise OutputError(
                f"{shown(path)} was written by a newer batchinfer (format {doc.format})",
                hint="use that version of batchinfer, or choose another --output",
            )
        bad = [name for name in doc.files if not _CLAIMABLE.match(name)] + [t for t in doc.trees if t not in TREES]
        if bad:
            raise _damaged(path, f"{shown(bad[0])} is not a name batchinfer writes")
        # a manifest written before ports were recorded: its claims are in this run's port
        claimed_in = Path(doc.data_dir) if doc.data_dir is not None else data_dir
        return cls(folder, set(doc.files), set(doc.trees), data_dir, claimed_in)

    @classmethod
    def _legacy(cls, folder: Path, spec: JobSpec) -> Manifest:
        names = names_for(spec, to_stdout=False)
        try:
            names |= {f"logs/{e.name}" for e in os.scandir(folder / "logs") if _WORKER_LOG.match(e.name)}
        except OSError:
            pass
        files = {name for name in names if _exists(folder / name)} | {f"{STATE_DIR}/lock"}
        return cls(folder, files, {tree for tree in TREES if _exists(folder / tree)})

    def save(self) -> None:
        """Write the manifest (owner-only, atomically)."""
        self.files.add(f"{STATE_DIR}/{MANIFEST}")
        doc: dict = {"format": MANIFEST_FORMAT, "files": sorted(self.files), "trees": sorted(self.trees)}
        if self.claimed_in is not None:
            doc["data_dir"] = str(self.claimed_in)
        write_private_json(self.path, doc)

    def clear(self) -> None:
        """Remove every claimed file and scratch tree (not the lock, manifest and job.json): start over.
        The old run's report.html goes too, when batchinfer wrote it (it is not claimed: see :func:`is_own_report`)."""
        if is_own_report(self.folder / REPORT_FILE):
            _remove_file(self.folder / REPORT_FILE)
        for name in sorted(self.files - KEPT):
            if (path := self.where(name)) is not None:
                _remove_file(path)
        for tree in sorted(self.trees):
            path = self.folder / tree
            if _exists(path) and stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                _remove_file(path)
        self.files = {name for name in self.files if name in KEPT or self.where(name) is None}
        self.trees.clear()
        if not any(name.startswith(DATA_PREFIX) for name in self.files):
            self.claimed_in = self.data_dir
        self.save()

    def check(self, names: set[str]) -> None:
        """Refuse (before anything is removed) names held by files that batchinfer did not write."""
        held = {n for n in self.files if not (self.moved and n.startswith(DATA_PREFIX))}  # a moved port: claimed afresh
        new = (names | set(TREES)) - held - self.trees
        taken = sorted(name for name in new if (path := self.where(name, claimed=False)) is not None and _exists(path))
        if taken:
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            first = taken[0] if not taken[0].startswith(DATA_PREFIX) else self.where(taken[0], claimed=False)
            raise OutputError(
                f"output {shown(self.folder)} holds {shown(first)}{more}, which batchinfer did not write "
                "and will not overwrite",
                hint="move it out of that folder, or choose another --output",
            )

    def claim(self, names: set[str]) -> None:
        """Claim ``names`` (and the scratch trees) before writing them: see :meth:`check`."""
        self.check(names)
        if self.moved:  # never cleared (the old row file stays, batchinfer forgets it): the new port's claims only
            self.files = {n for n in self.files if not n.startswith(DATA_PREFIX)}
        self.claimed_in = self.data_dir
        self.files |= names
        self.trees |= set(TREES)
        self.save()


def is_own_report(path: Path) -> bool:
    """Whether ``path`` is a page `batchinfer report` wrote (it holds the marker); False when absent.

    report.html is not claimed in the manifest (a report may be written while another run holds the
    folder): the marker in the page tells batchinfer's from a file of the user's at that name.
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False  # a link, a pipe: not a page batchinfer wrote (and a pipe would block a read)
        with open(path, "rb") as f:  # the marker is in the page's <head>: a user's big file is not read whole
            return REPORT_MARKER.encode() in f.read(REPORT_MARKER_WITHIN)
    except OSError:
        return False


def _remove_file(path: Path) -> None:
    """Remove a claimed file; a folder put there since is not batchinfer's, and stays."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def _damaged(path: Path, why: str) -> OutputError:
    return OutputError(
        f"{shown(path)} is damaged ({shown(why)})",
        hint="it lists the files batchinfer may remove there; choose another --output, "
        "or remove that folder yourself",
    )


def check_folder(folder: Path) -> None:
    """Refuse, before anything is changed, a path that is a file and a non-empty folder that is
    not an output folder of batchinfer's (one holding nothing but ``.batchinfer/`` is)."""
    if _exists(folder) and not folder.is_dir():
        raise OutputError(f"output {shown(folder)} is a file, not a folder", hint="give --output a folder path")
    if not folder.exists():
        return
    for own in (STATE_DIR, LOGS_DIR):  # a link there would make batchinfer write and remove in its target
        if (folder / own).is_symlink():
            raise OutputError(
                f"output {shown(folder)}: {own} is a symbolic link; batchinfer's own folders must be real folders",
                hint=f"remove the link {shown(folder / own)}, or choose another --output",
            )
    state = folder / STATE_DIR
    if _exists(state / JOB_FILE) or _exists(state / MANIFEST):
        return
    with os.scandir(folder) as entries:
        other = next((entry.name for entry in entries if entry.name != STATE_DIR), None)
    if other is not None:
        raise OutputError(
            f"output {shown(folder)} is not empty (it holds {shown(other)}) and is not a batchinfer output folder",
            hint="choose a new or empty folder with --output: batchinfer writes only where it can tell its files "
            "from yours",
        )


def seal_state(folder: Path) -> None:
    """Make batchinfer's files under ``.batchinfer/`` owner-only (not files the user put there)."""
    state = folder / STATE_DIR
    seal([state / name for name in STATE_FILES] + [folder / tree for tree in TREES])
    with contextlib.suppress(OSError):
        state.chmod(0o700)
