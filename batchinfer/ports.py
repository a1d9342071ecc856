"""A step's output ports when the step starts afresh: Azure gives every run a fresh, empty output.

A port under ``<output>/<step>/outputs/`` is batchinfer's folder: emptied when the step starts
afresh (its first run, ``--restart``, ``allow_reuse: false``, an upstream step that ran again, a
command step that runs again), never when a parallel step resumes (what it wrote so far is kept).
A port bound to a local ``path:`` is the user's: never emptied; on a fresh start a folder port
(and the folder a parallel step appends its rows in, where its script may write too) must be
empty or hold only the file batchinfer writes there (the row file, a ``uri_file`` port's own
file), else the run is refused before anything changes (exit 2). A ``uri_file`` port of a
command step is just its file, which the command writes again.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchinfer.errors import OutputError
from batchinfer.statefiles import shown

if TYPE_CHECKING:
    from batchinfer.pipeline import Step


@dataclass(frozen=True)
class FreshPorts:
    """The port folders of a step: batchinfer's (``own``), and the user's with the names batchinfer writes there."""

    own: tuple[Path, ...] = ()
    users: dict[Path, frozenset[str]] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse a user's port folder that holds other files than batchinfer writes there."""
        for folder, allowed in self.users.items():
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                other = sorted(e.name for e in entries if e.name not in allowed)
            if other:
                more = f" (and {len(other) - 1} more)" if len(other) > 1 else ""
                raise OutputError(
                    f"output port {shown(folder)} is not empty: it holds {shown(other[0])}{more}, and a step that "
                    "starts afresh needs an empty output (batchinfer never removes your files)",
                    hint="move those files out of that folder, or remove the output's path: so that the step "
                    "writes in its own folder under --output",
                )

    def empty(self) -> None:
        """Empty batchinfer's port folders (a link put in their place is removed, never followed)."""
        for folder in self.own:
            if os.path.islink(folder.parent):  # <step>/outputs is batchinfer's: a link there is not followed
                raise OutputError(f"{shown(folder.parent)} is a symbolic link; batchinfer's own folders must be "
                                  "real folders", hint="remove the link, or choose another --output")
            if not os.path.lexists(folder):
                continue
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                folder.unlink()
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)

    def start(self) -> None:
        """:meth:`check`, then :meth:`empty`."""
        self.check()
        self.empty()


def for_step(step: Step, row_file: str | None = None, data_dir: Path | None = None) -> FreshPorts:
    """The port folders of ``step``; ``row_file``: the name of the rows a parallel step appends in ``data_dir``."""
    own = tuple(port.folder.absolute() for port in step.outputs.values() if port.own)
    users: dict[Path, frozenset[str]] = {}
    for port in step.outputs.values():
        if port.own or (port.type == "uri_file" and not (row_file and data_dir is not None
                                                        and port.folder.absolute() == data_dir.absolute())):
            continue  # a uri_file port of the user's is that one file (its folder may be any folder of theirs)
        folder = port.folder.absolute()
        names = set(users.get(folder, ()))
        if port.file_name:
            names.add(port.file_name)
        if row_file and data_dir is not None and folder == data_dir.absolute():
            names |= {row_file, row_file + ".tmp"}
        users[folder] = frozenset(names)
    return FreshPorts(own, users)
