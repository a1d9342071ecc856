"""The script's life in a worker, whatever runs it: set up, import the entry script, ``init()`` once,
``run()`` per mini-batch, ``shutdown()`` at the end.

:class:`ScriptRuntime` knows nothing of pipes or actors: the local worker process
(``executors/local_worker.py``) and the Ray actor (``executors/ray.py``) both wrap it, so a script
behaves the same on both backends (helpers, ``sys.argv``, environment variables, ``AZUREML_*``,
return counting). Its wrapper sends the script's stdout and stderr to a log file
(``capture.redirect_output``) before :meth:`ScriptRuntime.start`, and delivers what it returns.

    runtime = ScriptRuntime(config, index, node_id)
    runtime.start()                      -> Ready | InitFailed (never raises)
    queue = runtime.queue(); queue.add([b1, b2, ...])
    while (got := queue.next()) is not None:
        outcome = runtime.run(*got)      (one try; never raises)
        if ScriptRuntime.ends_worker(outcome): stop serving, do not call close()
    runtime.close()                      (shutdown(), the private folder removed)

:class:`WorkQueue` holds the mini-batches given to this worker and downloads the next ones' files
(``fetch.py``) while ``run()`` works on the current one.

A try that raises ``MemoryError`` ends the worker: its outcome (kind ``out_of_memory``) is
delivered, then the worker stops serving and the executor replaces it, as a process whose heap is
exhausted fails whatever it runs next. ``SystemExit`` from ``run()`` (``sys.exit()``) ends the
worker too, as the script asked (kind ``worker_died``). Any other exception,
``KeyboardInterrupt`` and ``RecursionError`` included, fails the try and the worker goes on.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchinfer import _runtime
from batchinfer._compat.cloud_only import NoLocalMeaning
from batchinfer.fetch import TRANSFERS, Fetch, Fetcher
from batchinfer.output import format_rows, result_length
from batchinfer.protocol import (
    EXCEPTION,
    OUT_OF_MEMORY,
    OUTPUT_DIR_PLACEHOLDER,
    SHORT_RETURN,
    STORAGE,
    WORKER_DIED,
    WRONG_TYPE,
    InitFailed,
    MiniBatch,
    Outcome,
    Partition,
    ReadOptions,
    Ready,
    WorkerConfig,
)
from batchinfer.readers import read_rows
from batchinfer.redact import redact_text
from batchinfer.retry import StorageUnavailable

COMPAT_DIR = Path(__file__).parent / "_compat"
# thread pools of numeric libraries: by default each worker gets its share of the cores, so N workers
# running a model each do not fight over the CPUs with N x cores threads (set any of them to override)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
ALLOWED_TYPES = "a list, tuple, numpy array or pandas DataFrame with one element per item processed"

log = logging.getLogger("batchinfer.worker")


class MiniBatchContext:
    """The second argument of ``run(mini_batch, mini_batch_context)``, as in ParallelRunStep.

    ``dataset`` is the mini-batch as a local dataset: ``to_path()`` / ``download()`` for the
    files ``run()`` got, ``to_pandas_dataframe()`` (a copy) for its rows.
    """

    def __init__(self, batch: MiniBatch, data: Any = None) -> None:
        self.minibatch_index = batch.id
        # the partition's values: of the key columns (tables) or of the paths (files, partition_format)
        if isinstance(batch.table, Partition):
            self.partition_key_value = dict(batch.table.values)
        else:
            self.partition_key_value = dict(batch.partition_values or {})
        self._batch = batch
        self._data = data

    @functools.cached_property
    def dataset(self) -> Any:
        """The mini-batch's own dataset (made when first asked for)."""
        from batchinfer._compat.azure_data import LocalDataset

        label = ", ".join(self._batch.item_labels()[:1]) if self._batch.table is not None else ""
        if isinstance(self._data, list):
            return LocalDataset.for_mini_batch(self._data, None, label or f"mini-batch {self.minibatch_index}")
        files = [path for path, _ in self._batch.table.files] if isinstance(self._batch.table, Partition) else (
            [self._batch.table.path] if self._batch.table is not None else list(self._batch.files))
        return LocalDataset.for_mini_batch(files, self._data, label)


def _model_dir(models: dict[str, str], scratch: str) -> str | None:
    """AZUREML_MODEL_DIR laid out as Azure ML documents it, with links to the job spec's models.

    Azure puts model NAME version V at ``azureml-models/NAME/V/``, holding the registered file
    or folder under its own name, and points AZUREML_MODEL_DIR at ``azureml-models/NAME/V`` when
    there is one model and at ``azureml-models`` when there are several. Scripts then open
    ``$AZUREML_MODEL_DIR/model.pkl`` or ``$AZUREML_MODEL_DIR/<folder>/...``. Here every model is
    version 1, linked from the worker's private folder (the links go with it).
    """
    root = os.path.join(scratch, "azureml-models")
    linked = []
    for name, path in models.items():
        # models at URLs arrive here as their local copies in the machine's cache (see modelcache.py)
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            log.warning("model %r is not linked under AZUREML_MODEL_DIR (its name is not a folder name); "
                        "Model.get_model_path(%r) gives its path", name, name)
            continue
        version = os.path.join(root, name, "1")
        os.makedirs(version, exist_ok=True)
        target = os.path.normpath(path)
        os.symlink(target, os.path.join(version, os.path.basename(target)))
        linked.append(version)
    if not linked:
        return None
    return linked[0] if len(models) == 1 else root


def _load_script(config: WorkerConfig) -> Any:
    """Import the entry script as a module named after its file (as ParallelRunStep does)."""
    name = Path(config.entry_path).stem
    spec = importlib.util.spec_from_file_location(name, config.entry_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _failure(batch: MiniBatch, index: int, kind: str, message: str, started: float, items: int | None) -> Outcome:
    return Outcome(
        batch_id=batch.id,
        part=batch.part,
        worker=index,
        ok=False,
        items=items,
        kind=kind,
        message=message,
        traceback=_traceback() if kind in (EXCEPTION, OUT_OF_MEMORY, WORKER_DIED) else "",
        started=started,
        seconds=time.time() - started,
    )


def _traceback() -> str:
    try:
        return traceback.format_exc()
    except MemoryError:
        return ""


def _ends_worker(exc: BaseException, index: int, batch: MiniBatch, started: float, items: int | None,
                 step: str) -> Outcome:
    """The failed try of an exception after which this worker must not run anything else."""
    if isinstance(exc, MemoryError):
        detail = f": {exc}" if str(exc) else ""
        message = f"{step} raised MemoryError{detail}; worker {index} was replaced"
        return _failure(batch, index, OUT_OF_MEMORY, message, started, items)
    message = f"{step} called sys.exit({exc.code!r}); worker {index} exited and was replaced"
    return _failure(batch, index, WORKER_DIED, message, started, items)


def run_one(script: Any, batch: MiniBatch, config: WorkerConfig, index: int, fetch: Fetch | None = None) -> Outcome:
    """One try of one mini-batch: read it, call ``run()``, count and serialise what it returned.

    A file mini-batch's URLs are downloaded by ``fetch`` (started ahead, see :class:`WorkQueue`); a
    table mini-batch is read here. ``MemoryError`` (anywhere) and ``SystemExit`` (from ``run()``)
    give an outcome whose kind (``out_of_memory``, ``worker_died``) tells the worker to stop serving.
    """
    started = time.time()
    items = batch.known_items
    try:
        try:
            if batch.table is None:
                assert fetch is not None, "a file mini-batch comes with its fetch (WorkQueue.next)"
                data = fetch.paths()
            else:
                options = config.read_options[batch.input_index] if config.read_options else ReadOptions()
                data = read_rows(batch, config.storage_options[batch.input_index], options)
        except MemoryError as exc:
            return _ends_worker(exc, index, batch, started, items, "reading the mini-batch")
        except StorageUnavailable as exc:  # the store kept failing: a try of its own kind
            return _failure(batch, index, STORAGE, redact_text(str(exc)), started, items)
        except Exception as exc:
            message = f"cannot read the mini-batch: {redact_text(str(exc))}"
            return _failure(batch, index, EXCEPTION, message, started, items)
        items = len(data)
        try:
            if config.run_takes_context:
                result = script.run(data, MiniBatchContext(batch, data))
            else:
                result = script.run(data)
        except (MemoryError, SystemExit) as exc:
            return _ends_worker(exc, index, batch, started, items, "run()")
        except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C is the coordinator's: this one came from the script
            return _failure(batch, index, EXCEPTION, f"run() raised {type(exc).__name__}: {exc}", started, items)
        returned = result_length(result)
        if returned is None:
            message = f"run() returned {type(result).__name__}; it must return {ALLOWED_TYPES}"
            return _failure(batch, index, WRONG_TYPE, message, started, items)
        rows, header = b"", None
        if config.row_format is not None:
            try:
                rows, header = format_rows(result, config.row_format, config.row_header)
            except MemoryError as exc:
                return _ends_worker(exc, index, batch, started, items, "writing run()'s result")
            except Exception as exc:
                message = f"cannot write run()'s result as {config.row_format}: {type(exc).__name__}: {exc}"
                return _failure(batch, index, EXCEPTION, message, started, items)
        outcome = Outcome(
            batch_id=batch.id,
            part=batch.part,
            worker=index,
            ok=True,
            items=items,
            succeeded=min(returned, items),
            rows=rows,
            header=header,
            started=started,
            seconds=time.time() - started,
        )
        if returned < items:
            outcome.kind = SHORT_RETURN
            outcome.message = (
                f"run() returned {returned} results for {items} items: "
                f"{items - returned} counted as failed"
            )
        elif returned > items:
            log.warning(
                "mini-batch %s: run() returned %d results for %d items; all rows are kept, %d counted",
                batch.id, returned, items, items,
            )
        return outcome
    finally:
        if fetch is not None:
            fetch.discard()  # the try is over: its downloads go now (disk use stays bounded)


class WorkQueue:
    """The mini-batches given to one worker, taken in the order given, with the files of the next
    ones downloading while ``run()`` works on the current one.

    The next mini-batch is fetched ahead, and the ones after it while fewer than ``TRANSFERS`` (16)
    files are ahead: on this worker's disk or on their way are the running mini-batch's files and
    at most max(one mini-batch, 16 files) more (the running one's are removed when its try ends).
    A worker that dies loses the downloads with it; the executor hands its queued mini-batches to
    others, untried. Thread-safe: the local worker's pipe thread adds while its main thread takes.
    """

    def __init__(self, config: WorkerConfig, fetcher: Fetcher) -> None:
        self._config = config
        self._fetcher = fetcher
        self._changed = threading.Condition()
        self._queue: deque[list] = deque()  # [MiniBatch, Fetch | None]
        self._closed = False

    def add(self, batches: Iterable[MiniBatch]) -> None:
        """Queue ``batches`` behind those already here, and start fetching ahead."""
        with self._changed:
            self._queue.extend([b, None] for b in batches)
            self._fetch_ahead()
            self._changed.notify()

    def close(self) -> None:
        """No more mini-batches will come: :meth:`next` returns None once those queued are served."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def take_back(self) -> list[MiniBatch]:
        """Remove the queued mini-batches, never started, and drop their downloads (for a worker that
        stops serving: its executor hands them to other workers, untried)."""
        with self._changed:
            entries, self._queue = list(self._queue), deque()
        for _, fetch in entries:
            if fetch is not None:
                fetch.discard()
        return [batch for batch, _ in entries]

    def __len__(self) -> int:
        with self._changed:
            return len(self._queue)

    def _fetch_ahead(self) -> None:
        """Start fetching queued mini-batches' files, in order (holding the lock): always the first
        one's, and more while fewer than ``fetch.TRANSFERS`` files are on their way ahead, so that
        mini-batches of a few files each still keep every transfer busy."""
        ahead = 0
        for entry in self._queue:
            batch, fetch = entry
            if batch.table is not None:
                continue
            if fetch is None:
                if ahead and ahead + len(batch.files) > TRANSFERS:
                    return
                entry[1] = self._fetcher.start(batch.id, batch.files, self._config.storage_options[batch.input_index])
            ahead += len(batch.files)

    def next(self, block: bool = True) -> tuple[MiniBatch, Fetch | None] | None:
        """The next mini-batch and its fetch (None for a table); None when the queue is closed and
        empty (or, with ``block=False``, empty). The mini-batches queued are all served before None."""
        with self._changed:
            while block and not self._queue and not self._closed:
                self._changed.wait()
            if not self._queue:
                return None
            self._fetch_ahead()
            batch, fetch = self._queue.popleft()
            self._fetch_ahead()  # the next one's files come while run() works on this one
            return batch, fetch


class ScriptRuntime:
    """The entry script's life in one worker (see the module docstring); knows no pipes or actors.

    ``index`` is the worker's number (``worker-N``); ``node_id`` is what ``batchinfer.node_id()``
    answers, given by the wrapper (the host and local node index, or Ray's node id).
    """

    def __init__(self, config: WorkerConfig, index: int, node_id: str) -> None:
        self.config = config
        self.index = index
        self.node_id = node_id
        self.scratch: str | None = None  # the worker's private folder (its working directory)
        self.fetcher: Fetcher | None = None
        self._script: Any = None
        self._ended = False  # a try ended this worker: close() does not call shutdown()
        self._closed = False
        self._cwd_before: str | None = None

    def start(self) -> Ready | InitFailed:
        """Set the process up for the script, import it and call ``init()``; never raises.

        A private scratch folder becomes the working directory; ``THREAD_VARIABLES`` (unless set),
        the spec's ``environment_variables``, ``AZUREML_MODEL_DIR`` and ``AZUREML_BI_OUTPUT_PATH``
        are set; ``source_directory`` goes first on ``sys.path``; ``sys.argv`` is the script and its
        arguments; the helpers (``batchinfer.model_path``, ``node_id``, ...) answer for this worker.
        """
        started = time.perf_counter()
        config = self.config
        step = "setting up the worker"
        try:
            self._set_up()
            log.info("worker %d (pid %d) loading %s", self.index, os.getpid(), config.entry_path)
            step = "importing the entry script"
            script = _load_script(config)
            if not callable(getattr(script, "run", None)):
                raise TypeError(f"{config.entry_path} defines no callable run()")
            if hasattr(script, "init"):
                step = "init()"
                script.init()
        except BaseException as exc:  # noqa: BLE001 - init() may even call sys.exit()
            log.exception("%s failed", step)
            return InitFailed(self.index, _init_failure(step, exc), _traceback())
        self._script = script
        init_seconds = time.perf_counter() - started
        log.info("init() done in %.2fs", init_seconds)
        return Ready(self.index, os.getpid(), init_seconds, _rss(), self.node_id)

    def _set_up(self) -> None:
        config = self.config
        os.makedirs(config.scratch_dir or tempfile.gettempdir(), exist_ok=True)
        scratch = self.scratch = tempfile.mkdtemp(prefix=f"worker-{self.index}-", dir=config.scratch_dir or None)
        self.fetcher = Fetcher(scratch)
        try:
            self._cwd_before = os.getcwd()
        except OSError:
            self._cwd_before = None
        os.chdir(scratch)
        model_dir = _model_dir(config.models, scratch)
        share = str(max(1, (os.cpu_count() or 1) // config.processes_per_node))
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, share)  # the user's environment and environment_variables win
        os.environ.update(config.environment_variables)
        if model_dir:
            os.environ["AZUREML_MODEL_DIR"] = model_dir
        os.environ["AZUREML_BI_OUTPUT_PATH"] = config.output_dir
        sys.path.insert(0, config.source_directory)
        # Azure's helper modules, only where the real packages are not installed (appended last)
        sys.path.extend(str(COMPAT_DIR / name) for name in ("azureml_user", "azureml"))
        sys.argv = [config.entry_path, *(a.replace(OUTPUT_DIR_PLACEHOLDER, config.output_dir) for a in config.arguments)]
        _runtime.set_context(
            _runtime.RuntimeContext(
                models=config.models,
                side_inputs=config.side_inputs,
                output_dir=config.output_dir,
                log_dir=config.log_dir,
                working_dir=scratch,
                worker_name=f"worker-{self.index}",
                node_id=self.node_id,
            )
        )

    def queue(self) -> WorkQueue:
        """A queue whose mini-batches' files are fetched into this worker's folder (after :meth:`start`)."""
        assert self.fetcher is not None, "start() first"
        return WorkQueue(self.config, self.fetcher)

    def run(self, batch: MiniBatch, fetch: Fetch | None = None) -> Outcome:
        """One try of ``batch`` (its files fetched by ``fetch``, from :meth:`WorkQueue.next`, or
        here when None); never raises. After an outcome that :meth:`ends_worker`, run nothing more."""
        assert self._script is not None, "run() after a start() that returned Ready"
        if fetch is None and batch.table is None:
            try:
                fetch = self.fetcher.start(batch.id, batch.files, self.config.storage_options[batch.input_index])
            except Exception as exc:  # noqa: BLE001 - the scratch folder is unusable (disk full)
                message = f"cannot read the mini-batch: {redact_text(str(exc))}"
                return _failure(batch, self.index, EXCEPTION, message, time.time(), batch.known_items)
        outcome = run_one(self._script, batch, self.config, self.index, fetch)
        log.debug("mini-batch %s%s: %s items, %s succeeded, %.3fs", batch.id, batch.part or "", outcome.items,
                  outcome.succeeded, outcome.seconds)
        if not outcome.ok:
            log.error("mini-batch %s failed: %s\n%s", batch.id, outcome.message, outcome.traceback)
        if self.ends_worker(outcome):
            self._ended = True
            log.error("this worker stops here (shutdown() is not called); the coordinator replaces it")
            sys.stdout.flush()
            sys.stderr.flush()
        return outcome

    @staticmethod
    def ends_worker(outcome: Outcome) -> bool:
        """Whether the worker must stop serving after this outcome (``out_of_memory``, ``worker_died``)."""
        return outcome.kind in (OUT_OF_MEMORY, WORKER_DIED)

    def close(self) -> None:
        """The end of the worker: ``shutdown()`` (unless a try ended the worker), the private folder removed."""
        if self._closed:
            return
        self._closed = True
        if self.fetcher is not None:
            self.fetcher.shutdown()
        if self._script is not None and not self._ended and hasattr(self._script, "shutdown"):
            try:
                self._script.shutdown()
            except Exception:
                log.exception("shutdown() raised")
        sys.stdout.flush()
        sys.stderr.flush()
        if self.scratch is not None:
            if self._cwd_before is not None:
                try:
                    os.chdir(self._cwd_before)
                except OSError:
                    pass
            shutil.rmtree(self.scratch, ignore_errors=True)

def _init_failure(step: str, exc: BaseException) -> str:
    """The one-line reason a worker could not start, naming the Azure API when that is what failed."""
    if isinstance(exc, NoLocalMeaning):  # the message names the API and what to do instead
        return f"{step}: {exc}"
    message = f"{step} raised {type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in ("azureml", "azureml_user"):
        message += (" (batchinfer stands in for azureml.core's Model, Run and Dataset and for "
                    "azureml_user.parallel_run's EntryScript only: install the Azure ML SDK, or change the script)")
    return message


def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:
        return 0
