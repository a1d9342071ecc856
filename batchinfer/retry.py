"""Transient object-store errors, retried with backoff: one policy for every read and write of a store.

A store that times out, throttles (429, S3's SlowDown, Azure's ServerBusy) or answers 5xx usually
answers the next time. :func:`retrying` calls a function again after such an error, with
exponential backoff and jitter, up to ``tries`` times (or, with ``budget_s``, until that much time is
spent: for long-running writes, such as the remote output's uploads and its lease); any other error (missing object, access
denied, bad request) is raised at once, since asking again cannot change the answer. What still
fails after the last try is raised as :class:`StorageUnavailable`: the worker records it as a
failed try of kind ``storage`` (see protocol.STORAGE), the coordinator as a one-line error.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("batchinfer.storage")

T = TypeVar("T")

TRIES = 5  # first try included: waits of about 0.2, 0.4, 0.8, 1.6 s between them (about 3 s in all)
BASE_DELAY_S = 0.2
MAX_DELAY_S = 5.0

# HTTP statuses that mean "not now" rather than "no"
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# error codes and words of the SDKs (botocore, azure-core, google-cloud, aiohttp) for the same
_TRANSIENT_WORDS = re.compile(
    r"SlowDown|Throttl|ServerBusy|OperationTimedOut|InternalError|ServiceUnavailable|RequestTimeout|"
    r"TooManyRequests|timed? ?out|Timeout|Connection (?:reset|refused|aborted)|ServerDisconnected|"
    r"IncompleteRead|EndpointConnectionError|temporarily unavailable",
    re.IGNORECASE,
)
_TRANSIENT_TYPES = ("TimeoutError", "ConnectionError", "ConnectionResetError", "ConnectionAbortedError",
                    "ServerDisconnectedError", "ClientOSError", "ReadTimeoutError", "ConnectTimeoutError",
                    "EndpointConnectionError", "ServiceRequestError", "ServiceResponseError",
                    "IncompleteReadError", "ClientPayloadError", "ServerTimeoutError")


class StorageUnavailable(Exception):
    """A store kept failing with transient errors: ``what`` (an operation on a redacted URL) and the last error."""

    def __init__(self, what: str, tries: int, last: BaseException) -> None:
        super().__init__(f"{what} failed {tries} times (the store did not answer: {type(last).__name__}: {last})")
        self.what = what
        self.last = last


def status_of(exc: BaseException) -> int | None:
    """The HTTP status ``exc`` itself carries (``status_code``, ``status``, ``code``, botocore's
    ``response``), or None; the one reader of statuses (``storage.store_error`` walks causes with it)."""
    for name in ("status_code", "status", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps: fsspec wraps the SDKs' errors) is worth trying again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        status = status_of(current)
        if status is not None:
            return status in _TRANSIENT_STATUS
        if type(current).__name__ in _TRANSIENT_TYPES or isinstance(current, (TimeoutError, ConnectionError)):
            return True
        if _TRANSIENT_WORDS.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def retrying(call: Callable[[], T], what: str, tries: int = TRIES, sleep: Callable[[float], None] = time.sleep,
             budget_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> T:
    """``call()``, tried again after a transient error (see :func:`is_transient`) with exponential
    backoff (capped at :data:`MAX_DELAY_S`) and jitter; after ``tries`` transient failures,
    :class:`StorageUnavailable`.

    ``budget_s``: for a write that must outlast a store's bad minute (the remote output's uploads,
    its lease), keep trying past ``tries`` until ``budget_s`` seconds have passed since the first
    try (measured by ``clock``); the last wait is cut so as not to overrun it. Default: ``tries`` only.

    ``what`` names the operation for the log and the error (``"reading s3://bucket/key"``): it must
    already be redacted (see :func:`batchinfer.redact.redact_url`).
    """
    deadline = None if budget_s is None else clock() + budget_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = None if deadline is None else deadline - clock()
            if attempt >= tries and (left is None or left <= 0):
                raise StorageUnavailable(what, attempt, exc) from exc
            delay = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(attempt - 1, 16)) * random.uniform(0.5, 1.5)
            if left is not None and attempt >= tries:
                delay = min(delay, left)
            shown = f"{attempt}/{tries}" if deadline is None else f"{attempt}, for up to {budget_s:.0f}s"
            log.warning("%s: %s: %s; trying again in %.1fs (%s)", what, type(exc).__name__, exc, delay, shown)
            sleep(delay)
