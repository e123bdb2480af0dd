"""The contract of a cloud provider: send OpenAI requests to an upstream API, check its health.

Bodies and answers are OpenAI JSON as plain dicts; the service validated the request already.
``body["model"]`` is looked up in the provider's ``model_map`` (local name -> upstream name); a
name not in the map is sent unchanged, so a caller that passes the upstream name (as a cloud
:class:`router.protocol.Target` carries in ``name``) needs no entry. Bodies are never mutated.

Failures raise :mod:`router.errors` / :mod:`router.providers.errors` classes chosen so that
:func:`router.fallback.classify_failure` gives the right reason:

==============================================  ==============================  ============
upstream outcome                                error                           fallback
==============================================  ==============================  ============
429                                             TargetOverloadedError           overloaded
5xx, connection refused or closed               TargetUnavailableError          unavailable
401, 403 (our key is wrong)                     UpstreamAuthError               unavailable
timeout, 504                                    TargetTimeoutError              timeout
context window exceeded                         ContextLengthExceededError      context_length
other 4xx (the request's fault)                 UpstreamClientError (same 4xx)  none
stream broke after its first chunk              StreamInterruptedError          (committed)
==============================================  ==============================  ============
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any, ClassVar

from router.providers.settings import CloudProviderSettings

Json = dict[str, Any]


class CloudProvider(ABC):
    """One upstream API. Implementations register under :attr:`kind` in :mod:`.registry`.

    Retries (if any) happen inside a call, before anything reaches the caller. Streams are
    async generators: the caller awaits the first chunk before committing to a response, so a
    failure before it raises from that first ``__anext__`` and the caller can still fall back;
    a failure after it raises :class:`router.providers.errors.StreamInterruptedError`.
    Closing a stream early (``aclose``, cancellation) closes the upstream request.
    """

    kind: ClassVar[str]

    def __init__(self, settings: CloudProviderSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        """The provider's configured name (``cloud/<name>/<model>`` target ids)."""
        return self.settings.name

    @abstractmethod
    async def chat(self, body: Json) -> Json:
        """A chat completion (``/chat/completions``, not streamed)."""

    @abstractmethod
    def stream_chat(self, body: Json) -> AsyncGenerator[Json, None]:
        """The parsed ``chat.completion.chunk`` objects of a streamed chat completion."""

    @abstractmethod
    async def completions(self, body: Json) -> Json:
        """A text completion (``/completions``, not streamed)."""

    @abstractmethod
    def stream_completions(self, body: Json) -> AsyncGenerator[Json, None]:
        """The parsed chunks of a streamed text completion."""

    @abstractmethod
    async def embeddings(self, body: Json) -> Json:
        """Embeddings of the input (``/embeddings``)."""

    @abstractmethod
    async def moderations(self, body: Json) -> Json:
        """Moderation results for the input (``/moderations``)."""

    @abstractmethod
    async def health_check(self) -> bool:
        """Whether the upstream answers and accepts our key; never raises for upstream failures."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. The provider must not be used afterwards."""

    async def __aenter__(self) -> CloudProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.settings.base_url!r})"
