"""Stand-in for ``azureml.core`` (only ``Model.get_model_path``), used when the real SDK is not installed."""

from __future__ import annotations

from batchinfer._runtime import model_path


class Model:
    """The part of ``azureml.core.Model`` that scoring scripts call."""

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: object = None) -> str:
        """Local path of ``models[model_name]`` from the job spec (``version`` is ignored)."""
        return model_path(model_name)
