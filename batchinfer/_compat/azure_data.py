"""``azureml.core.Model`` and ``Dataset`` answered from the job spec, and the mini-batch's own dataset.

A registered model is ``models[name]`` of the job spec and a registered dataset is
``side_inputs[name]``: the names a script passes to ``Model.get_model_path`` or
``Dataset.get_by_name`` are looked up there. :class:`LocalDataset` is what such a
lookup returns, and ``mini_batch_context.dataset``: files or rows that are already
on this machine (or at a URL fsspec reads), with the methods that mean something here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from batchinfer import _runtime
from batchinfer._compat.cloud_only import ApiObject, NoLocalMeaning


def _is_url(path: str) -> bool:
    return "://" in path


def _named(kind: str, key: str, name: str, call: str) -> str:
    try:
        return _runtime._named(kind, getattr(_runtime.get_context(), key), name)
    except RuntimeError:
        hint = f"outside a batchinfer job there is no job spec to find {kind} {name!r} in"
        raise NoLocalMeaning(call, hint) from None


class LocalDataset(ApiObject):
    """Files (a FileDataset) or rows (a TabularDataset) that this machine can read."""

    _api = "azureml.data.FileDataset"

    def __init__(self, paths: list[str], root: str | None, name: str | None = None, frame: Any = None,
                 label: str = "", table: Any = None) -> None:
        self._paths = list(paths)
        self._root = root
        self._frame = frame
        self._table = table  # an MLTable folder's input keys (spec.InputSpec): how its files are read
        self._label = label
        self.name = name
        self.version = 1 if name else None
        self.id = f"local:{name or label}"
        if frame is not None:
            self._api = "azureml.data.TabularDataset"

    @classmethod
    def from_path(cls, path: str, name: str | None = None) -> LocalDataset:
        """The dataset of one path of the job spec: a file, a folder (all its files) or a URL."""
        if _is_url(path):
            return cls([path], None, name, label=path)
        path = os.path.abspath(path)
        if os.path.isfile(os.path.join(path, "MLTable")):
            return cls._from_mltable(path, name)
        if os.path.isdir(path):
            files = sorted(os.path.join(folder, f) for folder, _, names in os.walk(path) for f in names)
            return cls(files, path, name, label=path)
        return cls([path], os.path.dirname(path), name, label=path)

    @classmethod
    def _from_mltable(cls, folder: str, name: str | None) -> LocalDataset:
        """An MLTable folder, read as a job's ``type: mltable`` input is (``batchinfer/mltable.py``)."""
        from batchinfer.inputs import Lister
        from batchinfer.mltable import input_from_mltable
        from batchinfer.spec import InputSpec

        spec = InputSpec.model_validate(input_from_mltable(folder), context={"base_dir": folder})
        lister = Lister(spec)
        files = [found.path for entry in spec.path for found in lister.files_of(entry)]
        return cls(files, folder, name, label=folder, table=spec if spec.type == "tabular" else None)

    @classmethod
    def for_mini_batch(cls, files: list[str], frame: Any, label: str) -> LocalDataset:
        """The dataset of one mini-batch: the files ``run()`` got, or a copy of its DataFrame."""
        local = [f for f in files if not _is_url(f)]
        root = os.path.commonpath([os.path.dirname(f) for f in local]) if local and len(local) == len(files) else None
        return cls(files, root, None, frame, label)

    def __repr__(self) -> str:
        if self._frame is not None:
            what = f"{len(self._frame)} rows"
        else:
            what = f"{len(self._paths)} files" + (f" under {self._root}" if self._root and not self.name else "")
        named = f"{self.name!r}, " if self.name else ""
        where = f" of {self._label}" if self._label else ""
        return f"LocalDataset({named}{what}{where})"

    def to_path(self) -> list[str]:
        """The files' paths relative to the dataset's folder, each starting with '/', as Azure gives them."""
        if self._root is None:
            return list(self._paths)
        return ["/" + os.path.relpath(p, self._root) for p in self._paths]

    def download(self, target_path: str | None = None, overwrite: bool = False, ignore_not_found: bool = False
                 ) -> list[str]:
        """Copy the files into ``target_path`` (a new temporary folder by default); return their paths."""
        target = target_path or tempfile.mkdtemp(prefix="dataset-")
        copied = []
        for path, relative in zip(self._paths, self.to_path()):
            destination = os.path.join(target, relative.lstrip("/") if self._root else os.path.basename(path))
            if os.path.lexists(destination) and not overwrite:
                raise FileExistsError(f"{destination} exists: pass overwrite=True to replace it")
            os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
            if _is_url(path):
                import fsspec

                fsspec.core.url_to_fs(path)[0].get(path, destination, recursive=True)
            else:
                if os.path.lexists(destination):
                    os.unlink(destination)  # never write through a link left there
                shutil.copyfile(path, destination)
            copied.append(os.path.abspath(destination))
        return copied

    def to_pandas_dataframe(self) -> Any:
        """The rows: the mini-batch's own, or those of the files (CSV, Parquet, JSON Lines by extension)."""
        import pandas as pd

        if self._frame is not None:
            return self._frame.copy()
        frames = []
        if self._table is not None:  # an MLTable: its delimiter, header, columns ...
            from batchinfer.inputs import table_format
            from batchinfer.protocol import TableSlice
            from batchinfer.readers import read_table

            options = self._table.read_options()
            for path in self._paths:
                fmt, compression = table_format(path, self._table.format)
                table = TableSlice(path, fmt or "csv", compression=compression)
                frames.append(read_table(table, self._table.storage_options, options))
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for path in self._paths:
            lower = path.lower()
            if lower.endswith(".parquet"):
                frames.append(pd.read_parquet(path))
            elif lower.endswith((".jsonl", ".json")):
                frames.append(pd.read_json(path, lines=True))
            else:
                frames.append(pd.read_csv(path))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class Model(ApiObject):
    """``azureml.core.Model``: ``models[name]`` of the job spec."""

    _api = "azureml.core.Model"

    def __init__(self, workspace: Any = None, name: str | None = None, id: str | None = None,
                 version: int | None = None, **_ignored: Any) -> None:
        name = name or (id.split(":")[0] if id else None)
        if not name:
            raise NoLocalMeaning("azureml.core.Model(workspace) without a name",
                                 "name a model of the job spec's models: Model(workspace, name='...')")
        self._path = _named("model", "models", name, f"azureml.core.Model(name={name!r})")
        self.name = name
        self.version = int(version or 1)
        self.id = f"{name}:{self.version}"

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version}, path={self._path!r})"

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """Local path (file or folder) of ``models[model_name]`` from the job spec (``version`` is ignored)."""
        return _runtime.model_path(model_name)

    def download(self, target_dir: str = ".", exist_ok: bool = False, exists_ok: bool | None = None) -> str:
        """Copy the model's file or folder into ``target_dir``; return the copy's path."""
        destination = os.path.join(target_dir, os.path.basename(os.path.normpath(self._path)))
        if os.path.lexists(destination) and not (exist_ok or exists_ok):
            raise FileExistsError(f"{destination} exists: pass exist_ok=True to replace it")
        os.makedirs(target_dir, exist_ok=True)
        if os.path.isdir(self._path):
            shutil.copytree(self._path, destination, dirs_exist_ok=True)
        else:
            if os.path.lexists(destination):
                os.unlink(destination)
            shutil.copyfile(self._path, destination)
        return destination


class Dataset(ApiObject):
    """``azureml.core.Dataset``: ``get_by_name`` answers from the job spec's ``side_inputs``."""

    _api = "azureml.core.Dataset"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NoLocalMeaning("azureml.core.Dataset()")

    @staticmethod
    def get_by_name(workspace: Any, name: str, version: str | int = "latest") -> LocalDataset:
        """The job spec's ``side_inputs[name]`` as a local dataset (``workspace`` and ``version`` are ignored)."""
        path = _named("side input", "side_inputs", name, f"azureml.core.Dataset.get_by_name(name={name!r})")
        return LocalDataset.from_path(path, name)
