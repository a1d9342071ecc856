"""Object stores through fsspec: the filesystem for a URL, and one-line errors for what goes wrong.

Every part of batchinfer that touches a store (inputs, models, the output folder) gets its
filesystem here, so that a missing package, a missing bucket or wrong credentials read the
same everywhere: one line naming the URL (redacted) and what to do.
"""

from __future__ import annotations

from typing import Any

from batchinfer.errors import StorageError
from batchinfer.redact import redact_url

# fsspec protocol -> the extra of batchinfer that installs its package
EXTRAS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "az": ("abfs", "adlfs"), "abfs": ("abfs", "adlfs"), "abfss": ("abfs", "adlfs"), "adl": ("abfs", "adlfs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
}


def protocol_of(url: str) -> str:
    """``s3`` for ``s3://bucket/key``; ``file`` for a local path."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else "file"


def install_hint(url: str) -> str | None:
    """``pip install 'batchinfer[s3]'`` for an s3:// URL, or None when batchinfer has no extra for it."""
    extra = EXTRAS.get(protocol_of(url))
    return f"pip install 'batchinfer[{extra[0]}]'" if extra else None


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; :class:`StorageError` (one line) when
    the package behind the URL's protocol is missing or the protocol is unknown."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError:
        hint = install_hint(url)
        package = EXTRAS.get(protocol_of(url), (None, "the package for this protocol"))[1]
        raise StorageError(f"{redact_url(url)} needs {package}, which is not installed",
                           hint=hint or "install the fsspec implementation of this protocol") from None
    except ValueError as exc:
        raise StorageError(f"{redact_url(url)}: {exc}", hint="check the URL's scheme") from None


def store_error(exc: BaseException, url: str, role: str) -> StorageError:
    """One line for ``exc``, met while reaching ``url`` (the ``role`` it plays: ``"input"``,
    ``"model 'net'"``, ``"output"``): a missing bucket, refused credentials, or else the cause."""
    return StorageError(f"{role} {redact_url(url)}: {type(exc).__name__}: {exc}",
                        hint="check the URL, the credentials (storage_options or the SDK's environment variables)")
