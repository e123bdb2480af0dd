"""Cloud provider kinds by name; adding a kind is one module plus one entry here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from engine.errors import ConfigError
from router.providers.openai_compatible import OpenAICompatibleProvider
from router.providers.protocol import CloudProvider
from router.providers.settings import KIND_NAMES, CloudProviderSettings

PROVIDER_KINDS: Mapping[str, type[CloudProvider]] = MappingProxyType(
    {cls.kind: cls for cls in (OpenAICompatibleProvider,)}
)
if set(PROVIDER_KINDS) != set(KIND_NAMES):
    raise ImportError(f"provider kinds {sorted(PROVIDER_KINDS)} differ from the settings' {sorted(KIND_NAMES)}")


def make_provider(settings: CloudProviderSettings) -> CloudProvider:
    """A provider of ``settings.kind`` built from ``settings``; it owns its connections."""
    try:
        cls = PROVIDER_KINDS[settings.kind]
    except KeyError:
        known = ", ".join(sorted(PROVIDER_KINDS))
        message = f"unknown provider kind {settings.kind!r} (one of {known})"
        raise ConfigError(message, param="kind") from None
    return cls(settings)
