"""Azure ML APIs without a local meaning: they import, and using them is one clear error naming the API.

A script that calls ``Workspace.from_config()`` or ``Dataset.File.from_files(...)``
asks for a cloud service that a local run does not have. The name imports (so the
script's module-level imports work) and the call raises :class:`NoLocalMeaning`,
whose message names the Azure API and says what to do instead; the worker reports
it as the job's one-line failure reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

LOCAL_INSTEAD = (
    "give the model or data a local path or URL in the job spec (models:, side_inputs:, inputs:) "
    "and read it with Model.get_model_path(name) or Dataset.get_by_name(workspace, name)"
)


class NoLocalMeaning(RuntimeError):
    """An Azure ML API that needs the cloud was used by a script that batchinfer runs locally."""

    def __init__(self, api: str, hint: str = LOCAL_INSTEAD) -> None:
        super().__init__(f"{api} has no local meaning in batchinfer: {hint}")
        self.api = api


class CloudOnly:
    """Stands for an Azure ML function or object: calling it, or anything reached from it, raises.

    Reading an attribute gives another placeholder (``Dataset.File.from_files``), so the
    error names the whole expression the script used; so does turning it into a value.
    """

    def __init__(self, api: str, hint: str = LOCAL_INSTEAD) -> None:
        self._api = api
        self._hint = hint

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NoLocalMeaning(f"{self._api}()", self._hint)

    def __getattr__(self, name: str) -> CloudOnly:
        if name.startswith("_"):  # private and special names are probed by tools (copy, pickle, IPython)
            raise AttributeError(name)
        return CloudOnly(f"{self._api}.{name}", self._hint)

    def __repr__(self) -> str:
        return f"<{self._api}: not available in a local batchinfer run>"

    def _fail(self, *args: Any) -> NoReturn:
        raise NoLocalMeaning(self._api, self._hint)

    __str__ = __bool__ = __iter__ = __len__ = __getitem__ = __int__ = __float__ = _fail


class ApiMeta(type):
    """Metaclass of the stand-in classes: a class attribute they lack is a :class:`CloudOnly` named after it."""

    _api: str
    _hint: str = LOCAL_INSTEAD

    def __getattr__(cls, name: str) -> CloudOnly:
        if name.startswith("_"):
            raise AttributeError(name)
        return CloudOnly(f"{cls._api}.{name}", cls._hint)


class ApiObject(metaclass=ApiMeta):
    """Base of the stand-in objects: an attribute they lack is a :class:`CloudOnly` named after it."""

    _api = "azureml"
    _hint = LOCAL_INSTEAD  # what to do instead, in the error's message

    def __getattr__(self, name: str) -> CloudOnly:
        if name.startswith("_"):
            raise AttributeError(name)
        return CloudOnly(f"{self._api}.{name}", self._hint)


class _CloudOnlyClassMeta(ApiMeta):
    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NoLocalMeaning(f"{cls._api}()")


def cloud_only_class(api: str) -> type:
    """A class standing for the Azure ML class ``api``: it imports; constructing it or using it raises."""
    name = api.rsplit(".", 1)[-1]
    return _CloudOnlyClassMeta(name, (), {"_api": api, "__doc__": f"{api}: not available in a local run."})


def missing_names(module: str, provides: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a stand-in module: an unknown name is an ImportError naming it.

    ``from azureml.core import NoSuchThing`` then fails with this message instead of
    Python's generic one. Dunder names stay AttributeErrors (the import system probes them).
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        raise ImportError(
            f"{module}.{name} is not provided by batchinfer's local stand-in for {module} (it provides {provides}): "
            f"install the Azure ML SDK to use it, or {LOCAL_INSTEAD}",
            name=module,
        )

    return __getattr__
