"""Errors raised by the Turnout client: one branch per way a call can fail.

Parlant's engine logs an exception's message and its type, so each message says what failed,
where (the backend URL or model) and, for validation failures, which schema.
"""

from __future__ import annotations


class TurnoutError(Exception):
    """Base of every error this package raises."""


class TurnoutConnectionError(TurnoutError):
    """The backend could not be reached, or did not answer within the timeout."""


class TurnoutAPIError(TurnoutError):
    """The backend answered with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type: str | None = None, url: str = "") -> None:
        super().__init__(f"Turnout returned {status} ({type or 'error'}) for {url}: {message}")
        self.status = status
        self.type = type
        self.message = message


class TurnoutClientError(TurnoutAPIError):
    """A 4xx: the request itself is wrong (bad field, unknown model, missing key). Not retried."""


class TurnoutRateLimitError(TurnoutClientError):
    """A 429: the backend is overloaded; retried like Parlant's own adapters retry rate limits."""


class TurnoutServerError(TurnoutAPIError):
    """A 5xx: the backend failed or has no healthy target; retried a little."""


class TurnoutSchemaError(TurnoutError):
    """The backend's output did not validate against the Parlant schema after every attempt."""

    def __init__(self, schema: str, model: str, attempts: int, detail: str) -> None:
        super().__init__(
            f"{model} gave no valid {schema} after {attempts} attempt(s); last problem: {detail}"
        )
        self.schema = schema
        self.model = model
        self.attempts = attempts
