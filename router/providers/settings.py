"""Settings of one cloud provider, embedded in the service's one configuration schema.

The API key is the one thing read from outside the schema: at construction, from the environment
variable named by ``api_key_env`` or the file at ``api_key_file`` (e.g. a mounted Kubernetes
secret). It is held as a private :class:`pydantic.SecretStr`, so it never appears in ``repr``,
``str``, ``model_dump`` or validation errors. A rotated secret takes effect on the next start.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

# The kinds router.providers.registry implements (it checks that these are the ones it has).
KIND_NAMES = ("openai",)


class CloudProviderSettings(BaseModel):
    """One OpenAI-compatible (or other registered kind of) cloud API the router may send to.

    ``api_key_env`` wins when that variable is set and not empty; otherwise ``api_key_file`` is
    read. Configuring neither means the upstream needs no key. Configuring one that yields no key
    is an error at start-up, naming the variable or file, never its content.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Provider name, as in cloud target ids cloud/<provider>/<model>.",
    )
    kind: str = Field(
        default=KIND_NAMES[0],
        description="Implementation; 'openai' is any OpenAI-compatible HTTP API.",
    )
    base_url: str = Field(
        pattern=r"^https?://\S+$",
        description="API root that the endpoint paths follow, e.g. https://api.openai.com/v1.",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key.",
    )
    api_key_file: Path | None = Field(
        default=None, description="File holding the API key (surrounding whitespace is ignored)."
    )
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description=(
            "Longest wait for upstream bytes: the whole answer of a non-streaming request, "
            "or the gap between two chunks of a stream."
        ),
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait to open a connection."
    )
    first_token_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Streams only: longest wait per attempt from sending to the first chunk.",
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries after the first attempt, on 429, 5xx and connection failures.",
    )
    backoff_initial_s: float = Field(
        default=0.5, gt=0, le=60, description="Wait before the first retry (doubles each time)."
    )
    backoff_max_s: float = Field(
        default=8.0,
        gt=0,
        le=300,
        description="Longest wait between retries; a longer Retry-After means give up.",
    )
    health_check_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Deadline of one health check."
    )
    model_map: dict[str, str] = Field(
        default_factory=dict,
        description="Model names to rewrite before sending (local name -> upstream name).",
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent with every request (e.g. OpenAI-Organization); no credentials.",
    )

    _api_key: SecretStr | None = PrivateAttr(default=None)

    @property
    def api_key(self) -> SecretStr | None:
        """The key read at construction, or None when the upstream needs none."""
        return self._api_key

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KIND_NAMES:
            known = ", ".join(sorted(KIND_NAMES))
            raise ValueError(f"unknown provider kind {value!r} (one of {known})")
        return value

    @field_validator("base_url")
    @classmethod
    def _without_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("extra_headers")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        if any(name.lower() in ("authorization", "proxy-authorization") for name in value):
            raise ValueError("set the API key with api_key_env or api_key_file, not extra_headers")
        return value

    @model_validator(mode="after")
    def _ordered_backoff(self) -> CloudProviderSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self

    @model_validator(mode="after")
    def _read_api_key(self) -> CloudProviderSettings:
        key = _from_env(self.api_key_env)
        if key is None and self.api_key_file is not None:
            key = _from_file(self.api_key_file, self.name)
        if key is None and self.api_key_env:
            raise ValueError(
                f"no API key for provider {self.name!r}: "
                f"environment variable {self.api_key_env} is unset or empty"
            )
        if key is not None and not _is_token(key):
            raise ValueError(
                f"the API key of provider {self.name!r} has whitespace or non-printable characters"
            )
        self._api_key = SecretStr(key) if key else None
        return self


def _is_token(key: str) -> bool:
    # A header library would echo an invalid value, key included, in its error.
    return key.isascii() and key.isprintable() and not any(c.isspace() for c in key)


def _from_env(variable: str | None) -> str | None:
    value = os.environ.get(variable, "").strip() if variable else ""
    return value or None


def _from_file(path: Path, provider: str) -> str:
    """The key in ``path``; errors name the file and the reason, never the content."""
    try:
        value = path.read_bytes().decode("utf-8").strip()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(
            f"cannot read the API key file of provider {provider!r}: {path}: {reason}"
        ) from None
    except UnicodeDecodeError:
        # from None: the decode error holds the file's bytes.
        raise ValueError(
            f"the API key file of provider {provider!r} is not UTF-8 text: {path}"
        ) from None
    if not value:
        raise ValueError(f"the API key file of provider {provider!r} is empty: {path}")
    return value
