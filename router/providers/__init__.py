"""Cloud providers: OpenAI-compatible upstream APIs the router can fall back to.

Build one with :func:`make_provider` from :class:`CloudProviderSettings`; the contract is
:class:`CloudProvider` (:mod:`router.providers.protocol` documents how failures map to fallback
reasons).
"""

from router.providers.errors import (
    StreamInterruptedError,
    UpstreamAuthError,
    UpstreamClientError,
)
from router.providers.openai_compatible import OpenAICompatibleProvider
from router.providers.protocol import CloudProvider
from router.providers.registry import PROVIDER_KINDS, make_provider
from router.providers.settings import CloudProviderSettings

__all__ = [
    "PROVIDER_KINDS",
    "CloudProvider",
    "CloudProviderSettings",
    "OpenAICompatibleProvider",
    "StreamInterruptedError",
    "UpstreamAuthError",
    "UpstreamClientError",
    "make_provider",
]
