"""Object stores through fsspec: the filesystem for a URL, and one-line errors for what goes wrong.

Every part of batchinfer that touches a store (inputs, models, the output folder) gets its
filesystem here, so that a missing package, a missing bucket or wrong credentials read the
same everywhere: one line naming the URL (redacted) and what to do.

- :func:`filesystem` gives ``(fs, path)``; a missing package is a :class:`StorageError` naming
  the ``pip install`` to run.
- :func:`check_reachable` is the preflight: one cheap question to the store (an ``info`` of
  the URL, and of its bucket when the URL names nothing yet), before anything runs.
- :func:`call` is the one wrapper of a store operation: retried (``retry.retrying``), then whatever
  still fails becomes one :class:`StorageError` line naming the role and the URL.
- :func:`store_error` turns an error met while reaching a store into one line: the bucket or
  container does not exist, the credentials are refused, access is denied, or the cause.

The SDKs' errors are told apart by what they really raise (tried on moto's S3 server and on
Azurite): s3fs turns ``NoSuchBucket`` into ``FileNotFoundError`` and any 403 into
``PermissionError``, keeping botocore's ``ClientError`` (its ``Error.Code``) as the cause;
adlfs turns a missing container into ``FileNotFoundError`` (cause: azure-core's
``ResourceNotFoundError``, ``ContainerNotFound``) and lets ``HttpResponseError`` with
``error_code`` ``AuthorizationFailure``/``AuthenticationFailed`` (status 403) through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from batchinfer.errors import BatchInferError, StorageError
from batchinfer.redact import redact_text, redact_url
from batchinfer.retry import TRIES, StorageUnavailable, retrying, status_of

T = TypeVar("T")

# fsspec protocol -> (the extra of batchinfer that installs its package, the package)
EXTRAS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "az": ("abfs", "adlfs"), "abfs": ("abfs", "adlfs"), "abfss": ("abfs", "adlfs"), "adl": ("abfs", "adlfs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
}
# what a store calls its top-level folder, for the messages
_BUCKET_WORD = {"s3": "bucket", "s3a": "bucket", "gs": "bucket", "gcs": "bucket"}
# error codes (botocore's Error.Code, azure-core's error_code, GCS's reason) that mean the
# credentials themselves are wrong, and those that mean they are valid but not allowed
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
    "AuthenticationFailed", "AuthorizationFailure", "InvalidAuthenticationInfo", "NoAuthenticationInformation",
    "InvalidSecurity", "authError", "invalid_grant", "401",
}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AuthorizationPermissionMismatch", "InsufficientAccountPermissions",
           "AccountIsDisabled", "forbidden", "403"}
_MISSING_BUCKET = {"NoSuchBucket", "ContainerNotFound", "ContainerBeingDeleted"}
_CREDENTIALS_HINT = ("check storage_options (or the SDK's environment variables: AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_CONNECTION_STRING, GOOGLE_APPLICATION_CREDENTIALS)")


def protocol_of(url: str) -> str:
    """``s3`` for ``s3://bucket/key``; ``file`` for a local path."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else "file"


def is_object_store(url: str) -> bool:
    """Whether ``url`` names a bucket of an object store (s3, az/abfs, gs): what :func:`check_reachable` asks."""
    return protocol_of(url) in EXTRAS


def install_hint(url: str) -> str | None:
    """``pip install 'batchinfer[s3]'`` for an s3:// URL, or None when batchinfer has no extra for it."""
    extra = EXTRAS.get(protocol_of(url))
    return f"pip install 'batchinfer[{extra[0]}]'" if extra else None


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; :class:`StorageError` (one line) when
    the package behind the URL's protocol is missing, the protocol is unknown, or the
    storage_options cannot make a filesystem (a malformed connection string, an unknown key)."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError:
        hint = install_hint(url)
        package = EXTRAS.get(protocol_of(url), (None, "the package for this protocol"))[1]
        raise StorageError(f"{redact_url(url)} needs {package}, which is not installed",
                           hint=hint or "install the fsspec implementation of this protocol") from None
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            raise StorageError(f"{redact_url(url)}: {redact_text(str(exc))}", hint="check the URL's scheme") from None
        raise StorageError(f"{redact_url(url)}: the storage_options are not usable: {_why(exc)}",
                           hint="check storage_options") from None
    except TypeError as exc:  # an unknown keyword for this filesystem
        raise StorageError(f"{redact_url(url)}: the storage_options are not usable: {_why(exc)}",
                           hint="check storage_options against the documentation of s3fs, adlfs or gcsfs") from None


def bucket_of(url: str) -> str:
    """The bucket (or container) a store URL names: ``b`` for ``s3://b/k``, ``c`` for ``az://c/k``."""
    authority = url.partition("://")[2].split("/", 1)[0]
    if "@" not in authority:
        return authority
    # abfs://container@account.dfs.core.windows.net/...; elsewhere, before '@' are credentials
    before, _, after = authority.rpartition("@")
    return before if EXTRAS.get(protocol_of(url), ("",))[0] == "abfs" else after


def check_reachable(url: str, storage_options: dict[str, Any] | None, role: str) -> tuple[Any, str]:
    """The preflight of one URL, before anything runs: ``(fs, path)`` when the store answers,
    else :class:`StorageError` (one line, exit 2, the URL redacted, no secret in it).

    Contract, for every caller (inputs, the model cache, the remote output folder):

    - a local path, ``file://``, ``memory://`` or http(s) URL: only the filesystem is made (no question asked);
    - an object store (s3, az/abfs, gs): its package must be installed (else: ``... needs s3fs, which is not
      installed`` and the ``pip install`` to run); then ONE ``info`` of ``url`` (its part before any glob
      character), and, if that finds nothing, one ``info`` of its bucket: a missing bucket or container,
      refused credentials and denied access are errors; a URL that does not exist yet in an existing bucket
      is not (an output folder, or an input the listing then reports), so callers check existence themselves;
    - transient errors (timeouts, throttling, 5xx) are asked again (``retry.retrying``); what still fails
      is a StorageError saying the store did not answer.

    ``role`` names what the URL is for in the message: ``"input"``, ``"output"``, ``"model 'net'"``.
    Cheap: at most two requests (plus retries); nothing is listed or downloaded.
    """
    try:
        fs, path = filesystem(url, storage_options)
    except StorageError as exc:
        raise StorageError(f"{role} {exc.message}", hint=exc.hint) from None
    if not is_object_store(url):
        return fs, path
    probe = _before_glob(path)
    if call(lambda: _info_or_none(fs, probe), url, role, "reaching",
            explain=lambda exc: _explained(fs, probe, exc)) is not None:
        return fs, path
    bucket = probe.split("/", 1)[0]
    if bucket == probe.rstrip("/") or call(lambda: _info_or_none(fs, bucket), url, role, "reaching") is None:
        raise _missing_bucket(url, role)
    return fs, path


def call(fn: Callable[[], T], url: str, role: str, doing: str, *, tries: int = TRIES, budget_s: float | None = None,
         explain: Callable[[BaseException], BaseException] | None = None) -> T:
    """``fn()``, an operation on ``url`` for ``role`` (``"input"``, ``"model 'net'"``, ``"output"``),
    through the retry policy (``retry.retrying(tries=, budget_s=)``; the log names it ``"{doing} {url}"``,
    redacted). What still fails is ONE line: a :class:`BatchInferError` as it is; ``FileNotFoundError``
    as ``{role} {url} does not exist``; anything else (a store that kept failing, refused credentials, a
    missing bucket) as :func:`store_error` says, after ``explain(exc)`` if given. An operation for which
    a missing object is an answer catches ``FileNotFoundError`` itself."""
    shown = redact_url(url)
    try:
        return retrying(fn, f"{doing} {shown}", tries=tries, budget_s=budget_s)
    except BatchInferError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{role} {shown} does not exist",
                           hint="check the URL (its bucket or container, and its path)") from None
    except Exception as exc:  # noqa: BLE001 - refused credentials, bad requests: the SDKs' own types
        raise store_error(explain(exc) if explain else exc, url, role) from None


def _info_or_none(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def _explained(fs: Any, path: str, exc: BaseException) -> BaseException:
    """S3 answers a HEAD it refuses with a bare 403: a listing of one key says why (``InvalidAccessKeyId``,
    ``SignatureDoesNotMatch``, ``AccessDenied``). Other stores' errors carry their code already."""
    call_s3 = getattr(fs, "call_s3", None)
    if call_s3 is None or not any(isinstance(e, PermissionError) for e in _codes(exc)[2]):
        return exc
    bucket, _, key = path.partition("/")
    try:
        call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as listing:  # noqa: BLE001 - only its code is wanted
        return listing if _codes(listing)[0] - {"403"} else exc
    return exc


def _before_glob(path: str) -> str:
    """The part of ``path`` before its first folder holding a glob character (``b/x`` for ``b/x/*.csv``)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:i]) or parts[0]
    return path


def _missing_bucket(url: str, role: str) -> StorageError:
    word = _BUCKET_WORD.get(protocol_of(url), "container")
    return StorageError(f"{role} {redact_url(url)}: {word} {redact_text(bucket_of(url))!r} does not exist",
                        hint=f"create the {word}, or check the URL and the account it is reached with")


def _codes(exc: BaseException) -> tuple[set[str], int | None, list[BaseException]]:
    """The error codes and the HTTP status found along ``exc``'s chain of causes, and the chain."""
    codes: set[str] = set()
    status = None
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        response = getattr(current, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):  # botocore's ClientError
            codes.add(str(response["Error"]["Code"]))
        code = getattr(current, "error_code", None) or getattr(current, "reason", None)
        if code is not None:
            codes.add(str(getattr(code, "value", code)))
        status = status or status_of(current)
        current = current.__cause__ or current.__context__
    return codes, status, chain


def store_error(exc: BaseException, url: str, role: str) -> StorageError:
    """One line for ``exc``, met while reaching ``url`` (the ``role`` it plays: ``"input"``,
    ``"model 'net'"``, ``"output"``): a missing bucket, refused credentials, denied access,
    a store that did not answer, or else the cause. The URL and the cause are redacted."""
    codes, status, chain = _codes(exc)
    shown = f"{role} {redact_url(url)}"
    if codes & _MISSING_BUCKET:
        return _missing_bucket(url, role)
    if codes & _BAD_CREDENTIALS or status == 401:
        code = sorted(codes & _BAD_CREDENTIALS) or [str(status)]
        return StorageError(f"{shown}: the store refused the credentials ({code[0]})", hint=_CREDENTIALS_HINT)
    if codes & _DENIED or status == 403 or any(isinstance(e, PermissionError) for e in chain):
        code = sorted(codes & _DENIED) or ["HTTP 403"]
        return StorageError(f"{shown}: access denied ({code[0]}): the credentials are wrong or not allowed to use it",
                            hint=_CREDENTIALS_HINT)
    if isinstance(exc, StorageUnavailable):
        return StorageError(f"{shown}: the store did not answer ({_why(exc.last)})",
                            hint="check the endpoint (storage_options) and the network; run again later")
    return StorageError(f"{shown}: {_why(exc)}",
                        hint="check the URL, the credentials (storage_options or the SDK's environment variables)")


def _why(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, redacted, on one line, at most 300 characters."""
    text = str(exc).split("\n", 1)[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = redact_text(text)
    return text if len(text) <= 300 else text[:297] + "..."
