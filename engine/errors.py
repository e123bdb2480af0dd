"""Turnout's error hierarchy.

Every error a user can cause is a :class:`ClientError` (HTTP 4xx); everything else is a
:class:`ServerError` (HTTP 5xx). Each class carries a stable ``type`` string and a status code so
the service layer can render any of them in the OpenAI error format in one place. Messages must
never contain secrets (API keys, tokens).
"""

from __future__ import annotations


class TurnoutError(Exception):
    """Base of all Turnout errors."""

    type: str = "server_error"
    status_code: int = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ClientError(TurnoutError):
    """The request or input was wrong; retrying it unchanged will fail again."""

    type = "invalid_request_error"
    status_code = 400


class ModelNotFoundError(ClientError):
    """No model with the requested id is registered (or exists upstream)."""

    type = "model_not_found"
    status_code = 404


class ModelExistsError(ClientError):
    """A model with this id is already registered."""

    type = "model_exists"
    status_code = 409


class InvalidModelNameError(ClientError):
    """A model name or id that is empty, too long, or could escape the model store."""

    type = "invalid_model_name"


class InvalidCheckpointError(ClientError):
    """A checkpoint, GGUF file or Ollama layer that is missing, corrupt or unsupported."""

    type = "invalid_checkpoint"
    status_code = 422


class ConfigError(ClientError):
    """A configuration value that cannot work (names the offending field)."""

    type = "invalid_config"


class ServerError(TurnoutError):
    """Something failed on our side or upstream; the request may succeed later."""


class OverloadedError(ServerError):
    """At capacity (the ingress's request limit, a replica's, an upstream's rate limit); retry shortly.

    One status for every kind of overload, 503 with Retry-After, as OpenAI answers an overloaded
    engine (its 429 means the caller's own rate limit, which Turnout does not keep)."""

    type = "overloaded"
    status_code = 503


class DownloadError(ServerError):
    """A remote source (hub, registry) could not be reached or broke off mid-transfer."""

    type = "download_error"
    status_code = 502


class StoreError(ServerError):
    """The model store on disk is unusable (permissions, corrupt registry file)."""

    type = "store_error"
