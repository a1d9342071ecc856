"""Models and side inputs at URLs: fetched once per machine into a bounded cache, before any worker starts.

A model or side input may name a file or a folder (a prefix, taken recursively) in an object store.
The coordinator asks the store for its metadata (:func:`resolve`: one request for a file, one listing
for a folder; nothing is downloaded), which gives its *version*: the ETag, else the size and
modification time; for a folder, a hash of every file's (relative name, version). The job's
fingerprint uses that version. Then :meth:`ModelCache.fetch` gives each one a local path, which is
all the workers (``model_path()``, ``side_input()``, ``AZUREML_MODEL_DIR``) ever see.

The cache (``$BATCHINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/batchinfer``, else ``~/.cache/batchinfer``)::

    entries/<key>/meta.json          key = hash(URL, version); meta.json's mtime is the last use
    entries/<key>/data/<name>        the file or folder, under its own name (model.pkl, net/)
    tmp/<random>/                    an entry being downloaded, or being removed

Safe with several runs at once, with no timing involved:

- An entry is filled in ``tmp/`` (many files at once, each through :func:`batchinfer.storage.call`)
  and renamed into ``entries/`` whole: a rename is atomic, and fails if the entry exists, so of two
  runs filling one entry, the first rename wins and the other discards its copy and uses the winner's.
- A run holds a shared ``flock`` on the ``meta.json`` of every entry it uses (from before the
  download until the job ends); removing an entry needs an exclusive one, taken without waiting, so
  an entry in use is never removed. The kernel drops the locks of a killed run.
- Bounded: after a download, the least recently used entries are removed while the cache holds more
  than ``BATCHINFER_CACHE_MAX_GB`` (default 10). An entry larger than that alone is kept for the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchinfer.errors import StorageError, UsageError
from batchinfer.redact import redact_url

log = logging.getLogger("batchinfer")

DEFAULT_MAX_GB = 10.0
GB = 1024**3
DOWNLOAD_THREADS = 16  # files of a folder fetched at once: enough to hide each request's latency
META = "meta.json"
STALE_S = 3600
DATA = "data"
# keys of fsspec's info() that name an object's version (s3fs, adlfs, gcsfs, http), best first
_ETAG_KEYS = ("ETag", "etag", "e_tag")
_MTIME_KEYS = ("LastModified", "last_modified", "Last-Modified", "mtime", "updated", "modified", "created")
ROLES = {"models": "model", "side_inputs": "side input"}


@dataclass(frozen=True)
class Remote:
    """A model or side input at a URL, as its metadata describes it (nothing downloaded)."""

    kind: str  # "models" or "side_inputs"
    name: str
    url: str
    storage_options: dict[str, Any] = field(repr=False)  # credentials: never shown
    version: str
    folder: bool
    files: tuple[tuple[str, str, int], ...]  # (relative name, path in the store, size); ("", path, size) for a file

    @property
    def role(self) -> str:
        return f"{ROLES[self.kind]} {self.name!r}"

    @property
    def size(self) -> int:
        return sum(size for _, _, size in self.files)

    @property
    def key(self) -> str:
        """The cache entry's name: the URL (redacted: a SAS or presigned signature, a ``user:pass@`` rotate)
        and its version (storage_options are credentials: not in it)."""
        return hashlib.sha256(f"{redact_url(self.url)}\n{self.version}".encode()).hexdigest()[:32]

    @property
    def local_name(self) -> str:
        """The name the file or folder keeps on disk (Azure's scripts open $AZUREML_MODEL_DIR/model.pkl)."""
        return self.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "data"


def _info_version(info: dict[str, Any]) -> str:
    """One object's version from its metadata: its ETag, else its size and modification time."""
    for key in _ETAG_KEYS:
        if info.get(key):
            return f"etag:{str(info[key]).strip(chr(34))}"
    size = info.get("size")
    for key in _MTIME_KEYS:
        if info.get(key):
            return f"size:{size}:mtime:{info[key]}"
    return f"size:{size}"


def _resolve_one(kind: str, name: str, url: str, storage_options: dict[str, Any]) -> Remote:
    from batchinfer.storage import call, filesystem

    role = f"{ROLES[kind]} {name!r}"
    fs, path = filesystem(url, storage_options)
    fs.invalidate_cache(path)  # fsspec keeps filesystems (and their listings) per process
    info = call(lambda: fs.info(path), url, role, "reading")
    if info.get("type") != "directory":
        version = _info_version(info)
        return Remote(kind, name, url, storage_options, version, False, (("", path, int(info.get("size") or 0)),))
    found = call(lambda: fs.find(path, detail=True), url, role, "listing")
    base = path.rstrip("/") + "/"
    files = []
    versions = hashlib.sha256()
    for full, item in sorted(found.items()):
        if item.get("type") != "file" or full.endswith("/") or not full.startswith(base):
            continue  # folder markers of the stores
        relative = full[len(base):]
        parts = relative.split("/")
        if any(part in ("", ".", "..") or "\0" in part for part in parts):
            raise StorageError(f"{role} {redact_url(url)} holds an object named {relative!r}, which cannot be a "
                               "local file",
                               hint="rename the object, or point the URL at a folder without it")
        files.append((relative, full, int(item.get("size") or 0)))
        versions.update(f"{relative}\0{_info_version(item)}\n".encode())
    if not files:
        raise StorageError(f"{role} {redact_url(url)} is an empty folder", hint="check the URL")
    return Remote(kind, name, url, storage_options, f"folder:{versions.hexdigest()}", True, tuple(files))


def resolve(spec: Any) -> list[Remote]:
    """The job's models and side inputs at URLs, from their metadata only (no download): before any
    worker starts, so that a missing object, bucket, package or credential is one line, exit 2."""
    from batchinfer.spec import is_url

    remotes = []
    for kind in ROLES:
        for name, location in getattr(spec, kind).items():
            if is_url(location.path):
                remotes.append(_resolve_one(kind, name, location.path, spec.location_options(location)))
    return remotes


def versions(remotes: list[Remote]) -> dict[str, str]:
    """``{url: version}``: what the job's fingerprint uses of its remote models and side inputs."""
    return {remote.url: remote.version for remote in remotes}


def cache_dir() -> Path:
    """``$BATCHINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/batchinfer``, else ``~/.cache/batchinfer``."""
    if os.environ.get("BATCHINFER_CACHE_DIR"):
        return Path(os.environ["BATCHINFER_CACHE_DIR"]).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).absolute() / "batchinfer"


def max_bytes() -> int:
    """The cache's bound: ``$BATCHINFER_CACHE_MAX_GB`` gigabytes (default 10)."""
    raw = os.environ.get("BATCHINFER_CACHE_MAX_GB", "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * GB)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise UsageError(f"BATCHINFER_CACHE_MAX_GB={raw!r} is not a size in gigabytes",
                         hint="give a number such as 10 or 0.5, or unset it for the default (10)")
    return int(value * GB)


@dataclass
class Entry:
    """One entry of the cache, as ``batchinfer cache list`` shows it."""

    key: str
    url: str  # redacted
    size: int
    last_used: float
    folder: bool
    path: Path


@dataclass
class Fetched:
    """Local paths for a run's models and side inputs; the cache entries stay locked until :meth:`close`."""

    models: dict[str, str]
    side_inputs: dict[str, str]
    notes: list[str] = field(default_factory=list)  # one line per remote one, for job.log
    _locks: list[int] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release the entries: later runs may remove them."""
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime < time.time() - seconds
    except OSError:
        return False


def size_text(size: int) -> str:
    """``1.5 MB``: a size for people."""
    for unit, scale in (("GB", GB), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class ModelCache:
    """The machine's cache of remote models and side inputs (see the module's docstring)."""

    def __init__(self, root: Path | None = None, limit: int | None = None) -> None:
        self.root = root or cache_dir()
        self.limit = max_bytes() if limit is None else limit
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"

    def _ensure(self) -> None:
        for folder in (self.root, self.entries_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def fetch(self, spec: Any, remotes: list[Remote]) -> Iterator[Fetched]:
        """Local paths for every model and side input of ``spec`` (those at URLs through the cache),
        the cache entries held (never removed) until the ``with`` block ends."""
        fetched = Fetched({n: loc.path for n, loc in spec.models.items()},
                          {n: loc.path for n, loc in spec.side_inputs.items()})
        try:
            if remotes:
                try:
                    self._ensure()
                except OSError as exc:
                    raise StorageError(f"the model cache {self.root} cannot be used: {exc.strerror or exc}",
                                       hint="set BATCHINFER_CACHE_DIR to a folder you can write to") from None
            downloaded = False
            for remote in remotes:
                try:
                    fd, path, note, new = self._entry_for(remote)
                except OSError as exc:  # the cache's own disk: full, read-only
                    raise StorageError(f"the model cache {self.root} cannot hold {remote.role}: {exc.strerror or exc}",
                                       hint="free some space, or set BATCHINFER_CACHE_DIR to another folder") from None
                fetched._locks.append(fd)
                getattr(fetched, remote.kind)[remote.name] = str(path / DATA / remote.local_name)
                fetched.notes.append(note)
                downloaded |= new
            if downloaded:
                fetched.notes.extend(self.evict())
            yield fetched
        finally:
            fetched.close()

    def _entry_for(self, remote: Remote) -> tuple[int, Path, str, bool]:
        """The entry of ``remote``, locked: reused, or downloaded now (its lock fd, folder, log line, new?)."""
        where = f"{remote.role} {redact_url(remote.url)}"
        for _ in range(3):  # an entry removed by another run between our look and our lock: look again
            fd = self._open_existing(remote.key)
            if fd is not None:
                os.utime(self.entries_dir / remote.key / META)  # the last use
                note = f"{where}: reused from the cache ({size_text(remote.size)})"
                return fd, self.entries_dir / remote.key, note, False
            started = time.monotonic()
            fd, won = self._download(remote)
            if fd is not None:
                seconds = time.monotonic() - started
                how = "downloaded" if won else "downloaded by another run at the same time; its copy is used"
                note = f"{where}: {how} ({size_text(remote.size)} in {seconds:.2f}s)"
                if remote.size > self.limit:
                    note += (f"; larger than the cache's limit ({size_text(self.limit)}, BATCHINFER_CACHE_MAX_GB):"
                             " kept for this run only")
                return fd, self.entries_dir / remote.key, note, True
        raise StorageError(f"{where}: the cache entry kept being removed by other runs",
                           hint="raise BATCHINFER_CACHE_MAX_GB, or run again")

    def _open_existing(self, key: str) -> int | None:
        """A shared lock on entry ``key`` if it exists (and is still there once locked), else None."""
        meta = self.entries_dir / key / META
        try:
            fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a remover holds it (a rename)
        try:
            still = os.stat(meta, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still = False
        if not still:
            os.close(fd)
            return None
        return fd

    def _download(self, remote: Remote) -> tuple[int | None, bool]:
        """Fill a new entry for ``remote`` in tmp/ and rename it into place; its locked fd, and
        whether ours was the copy kept (False: another run's, finished first; None: it vanished)."""
        from batchinfer.storage import call, filesystem

        work = self.tmp_dir / uuid.uuid4().hex
        work.mkdir(mode=0o700)
        fd = os.open(work / META, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)  # held from now on: the clean-up of tmp/ leaves it alone
        try:
            fs, _ = filesystem(remote.url, remote.storage_options)
            target = work / DATA / remote.local_name
            jobs = [(target / rel if rel else target, path, size) for rel, path, size in remote.files]
            for local, _, _ in jobs:
                local.parent.mkdir(parents=True, exist_ok=True)

            def get(job: tuple[Path, str, int]) -> None:
                local, path, size = job
                shown = redact_url(remote.url) + (f" ({path})" if remote.folder else "")
                call(lambda: fs.get_file(path, str(local)), remote.url, remote.role,
                     "downloading" + (f" {path} of" if remote.folder else ""))
                if os.path.getsize(local) != size:
                    raise StorageError(f"{remote.role} {shown} changed while it was downloaded",
                                       hint="run the job again once it no longer changes")

            with ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, len(jobs))) as pool:
                list(pool.map(get, jobs))
            meta = {"url": redact_url(remote.url), "version": remote.version, "size": remote.size,
                    "folder": remote.folder, "files": len(remote.files), "created": time.time()}
            os.write(fd, json.dumps(meta, sort_keys=True).encode())
            os.fsync(fd)
            try:
                os.rename(work, self.entries_dir / remote.key)  # atomic; fails if the entry is there
                return fd, True
            except OSError:  # another run filled it first: use its copy, drop ours
                os.close(fd)
                fd = -1
                shutil.rmtree(work, ignore_errors=True)
                return self._open_existing(remote.key), False
        except BaseException:
            if fd >= 0:
                os.close(fd)
            shutil.rmtree(work, ignore_errors=True)
            raise

    def entries(self) -> list[Entry]:
        """Every complete entry, least recently used first."""
        found = []
        try:
            names = os.listdir(self.entries_dir)
        except FileNotFoundError:
            return []
        for key in names:
            meta = self.entries_dir / key / META
            try:
                doc = json.loads(meta.read_text())
                used = os.stat(meta).st_mtime
            except (OSError, ValueError):
                continue
            found.append(Entry(key, str(doc.get("url", "?")), int(doc.get("size", 0)), used, bool(doc.get("folder")),
                               self.entries_dir / key))
        return sorted(found, key=lambda e: (e.last_used, e.key))

    def _remove(self, folder: Path) -> bool:
        """Remove an entry (or a left-over of tmp/) unless a run holds it; True if removed."""
        try:
            fd = os.open(folder / META, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # a download killed before it began: nobody holds it
        except OSError:
            return False
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            trash = self.tmp_dir / f"removing-{uuid.uuid4().hex}"
            try:
                os.rename(folder, trash)  # out of sight at once; a reader waiting on the lock sees it gone
            except OSError:
                return False
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _clean_tmp(self) -> None:
        """Remove what killed runs left in tmp/ (downloads and removals nobody holds any more)."""
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return
        for name in names:
            folder = self.tmp_dir / name
            if name.startswith("removing-"):
                shutil.rmtree(folder, ignore_errors=True)
            elif os.path.lexists(folder / META) or _older_than(folder, STALE_S):
                # without meta.json it is a download about to begin (its meta.json is made and locked
                # just after its folder), or one killed at that very moment: left an hour
                self._remove(folder)

    def evict(self) -> list[str]:
        """Remove least recently used entries while the cache is over its limit; entries in use
        (by this run or another) stay. Returns one line per entry removed."""
        self._clean_tmp()
        entries = self.entries()
        total = sum(e.size for e in entries)
        notes = []
        for entry in entries:
            if total <= self.limit:
                break
            if self._remove(entry.path):
                total -= entry.size
                notes.append(f"model cache: removed {entry.url} ({size_text(entry.size)}), least recently used, "
                             f"to stay within {size_text(self.limit)}")
        return notes

    def clear(self, older_than_days: float | None = None) -> tuple[list[Entry], list[Entry]]:
        """Remove every entry (or those unused for ``older_than_days``); returns (removed, kept in use)."""
        self._clean_tmp()
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        removed, busy = [], []
        for entry in self.entries():
            if cutoff is not None and entry.last_used >= cutoff:
                continue
            (removed if self._remove(entry.path) else busy).append(entry)
        return removed, busy
