"""Errors of the cloud provider layer, on top of :mod:`router.errors`.

Most upstream failures map onto the router's own classes so :func:`router.fallback.classify_failure`
picks the right fallback reason (see :mod:`router.providers.upstream`). The classes here cover what
those do not: an upstream 4xx that is the request's fault, a provider that rejects our credentials,
and a stream that broke off after the caller had committed to it. Messages never carry the API key.
"""

from __future__ import annotations

from engine.errors import ClientError, ServerError
from router.errors import TargetUnavailableError


class UpstreamClientError(ClientError):
    """The provider rejected the request itself (an upstream 4xx); no other target would help.

    ``status_code`` is the upstream status, so the caller answers with the same one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status_code = status_code
        self.code = code


class UpstreamAuthError(TargetUnavailableError):
    """The provider refused our credentials (upstream 401 or 403).

    The operator's key is wrong or lacks access, not the user's request: it answers 502 and
    counts as the target being unavailable, so the router falls back and the circuit opens.
    """

    type = "upstream_auth_error"
    status_code = 502

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class StreamInterruptedError(ServerError):
    """A stream broke off after its first chunk had reached the caller.

    Too late to fall back or answer with an HTTP status: the caller ends its own stream with an
    OpenAI error event built from this error. The failure underneath is ``__cause__``.
    """

    type = "stream_interrupted"
    status_code = 502
