"""The retry policy for object stores: which errors are asked again, and how often (batchinfer/retry.py)."""

from __future__ import annotations

import pytest

from batchinfer.retry import StorageUnavailable, is_transient, retrying


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _BotoLike(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def _wrapped(inner: BaseException) -> OSError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise OSError("fsspec wrapped it") from exc
    except OSError as outer:
        return outer


@pytest.mark.parametrize(
    "error, transient",
    [
        (_Status(503), True),
        (_Status(500), True),
        (_Status(429), True),
        (_Status(408), True),
        (_Status(404), False),
        (_Status(403), False),
        (_Status(400), False),
        (_BotoLike(503, "SlowDown"), True),
        (_BotoLike(403, "InvalidAccessKeyId"), False),
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("Connection reset by peer"), True),
        (FileNotFoundError("s3://b/k"), False),
        (PermissionError("denied"), False),
        (ValueError("The specified bucket is not valid"), False),
        (RuntimeError("ServerBusy: the server is busy"), True),
        (_wrapped(_Status(502)), True),
        (_wrapped(_Status(404)), False),
        (_wrapped(TimeoutError()), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_which_errors_are_tried_again(error, transient):
    assert is_transient(error) is transient


def test_a_transient_error_is_tried_again_until_it_passes():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _Status(503)
        return "data"

    assert retrying(flaky, "reading s3://b/k", sleep=waits.append) == "data"
    assert len(calls) == 3
    assert len(waits) == 2 and waits[1] > waits[0] * 0.5  # backing off (with jitter)


def test_a_store_that_keeps_failing_gives_storage_unavailable_naming_the_operation():
    waits = []
    with pytest.raises(StorageUnavailable, match=r"reading s3://b/k failed 4 times .*503"):
        retrying(lambda: (_ for _ in ()).throw(_Status(503)), "reading s3://b/k", tries=4, sleep=waits.append)
    assert len(waits) == 3


def test_a_permanent_error_is_raised_at_once():
    waits = []
    with pytest.raises(FileNotFoundError):
        retrying(lambda: (_ for _ in ()).throw(FileNotFoundError("k")), "reading", sleep=waits.append)
    assert waits == []


class _Clock:
    """A clock that only the waits move: the budget is tested without time passing."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    "budget_s, failures, succeeds, min_tries",
    [
        (None, 4, True, 5),      # the default: 5 tries, enough for 4 failures
        (None, 5, False, 5),     # ... not for 5 (about 3 s of waits)
        (60.0, 12, True, 13),    # a budget: tries go on past 5 while the budget lasts
        (60.0, 10_000, False, 14),  # ... then StorageUnavailable, having waited the whole budget, no more
        (0.0, 4, True, 5),       # a budget never tries fewer times than ``tries``
    ],
)
def test_a_budget_keeps_trying_for_that_long(budget_s, failures, succeeds, min_tries):
    clock = _Clock()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= failures:
            raise _Status(503)
        return "written"

    if succeeds:
        assert retrying(flaky, "writing s3://b/k", sleep=clock.sleep, budget_s=budget_s, clock=lambda: clock.now) == "written"
        assert len(calls) == failures + 1
    else:
        with pytest.raises(StorageUnavailable, match=r"writing s3://b/k failed \d+ times"):
            retrying(flaky, "writing s3://b/k", sleep=clock.sleep, budget_s=budget_s, clock=lambda: clock.now)
        assert len(calls) >= min_tries
        if budget_s:
            assert clock.now == pytest.approx(budget_s)  # the whole budget, the last wait cut to fit
    assert all(wait <= 5.0 * 1.5 for wait in clock.waits)  # capped backoff
