"""When to retry an upstream request: exponential backoff with jitter, and ``Retry-After``."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    """Delays before retries: ``initial_s * 2**(n-1)`` capped at ``max_s``, with equal jitter.

    Equal jitter waits between half and all of the exponential delay, so retries from many
    clients spread out without ever retrying at once.
    """

    initial_s: float
    max_s: float
    max_retries: int
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (1-based), or None to give up.

        Gives up after ``max_retries`` retries, or when the upstream asks to wait longer than
        ``max_s`` (better to fall back to another target than to hold the request). A
        ``retry_after`` within bounds is a minimum: the wait is never shorter.
        """
        if retry > self.max_retries:
            return None
        if retry_after is not None and retry_after > self.max_s:
            return None
        ceiling = min(self.max_s, self.initial_s * 2 ** (retry - 1))
        jittered = self.uniform(ceiling / 2, ceiling)
        return max(jittered, retry_after or 0.0)


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the upstream asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be seconds or an HTTP date; unparsable values count as absent.
    ``headers`` must look names up case-insensitively (as ``httpx.Headers`` does).
    """
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    return _until(value, now or datetime.now(UTC))


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def _until(http_date: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
