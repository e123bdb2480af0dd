"""Models from an Ollama store, read in place or pulled from an Ollama (Docker v2 style) registry.

The store layout is the one Ollama writes: ``<home>/manifests/<registry>/<namespace>/<name>/<tag>``
holds a Docker image manifest (schema 2) whose ``config`` and ``layers`` name blobs by digest
(``sha256:<hex>``), stored as ``<home>/blobs/sha256-<hex>``. The model layer is a GGUF file; the
template, params, system and license layers are small text or JSON blobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import (
    InvalidCheckpointError,
    InvalidModelNameError,
    ModelNotFoundError,
)
from engine.store.gguf import file_sha256

logger = logging.getLogger(__name__)

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_LAYER = "application/vnd.ollama.image.model"
TEMPLATE_LAYER = "application/vnd.ollama.image.template"
PARAMS_LAYER = "application/vnd.ollama.image.params"
SYSTEM_LAYER = "application/vnd.ollama.image.system"
LICENSE_LAYER = "application/vnd.ollama.image.license"
ADAPTER_LAYER = "application/vnd.ollama.image.adapter"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}(?::[0-9]{1,5})?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,79}$")
_NAME_OR_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class OllamaRef:
    """A fully qualified Ollama model reference: ``registry/namespace/name:tag``."""

    registry: str
    namespace: str
    name: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> OllamaRef:
        """Parse ``name[:tag]``, ``namespace/name[:tag]`` or ``registry/namespace/name[:tag]``.

        Missing parts default to ``registry.ollama.ai``, ``library`` and ``latest``. Raises
        :class:`InvalidModelNameError` for empty parts, ``..``, or characters Ollama does not allow.
        """
        if ".." in text:
            raise _bad_reference(text, "'..' is not allowed")
        head, slash, last = text.rpartition("/")
        name, colon, tag = last.partition(":")
        if not colon:
            tag = DEFAULT_TAG
        parts = [*head.split("/"), name] if slash else [name]
        if len(parts) > 3:
            raise _bad_reference(text, "expected [registry/][namespace/]name[:tag]")
        registry, namespace = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts[:-1]
        checks = (("registry", registry, _HOST), ("namespace", namespace, _NAMESPACE))
        for kind, value, pattern in (*checks, ("name", name, _NAME_OR_TAG), ("tag", tag, _NAME_OR_TAG)):
            if not pattern.match(value):
                raise _bad_reference(text, f"invalid {kind} {value!r}")
        return cls(registry, namespace, name, tag)

    def manifest_path(self, home: Path) -> Path:
        """Where Ollama keeps this model's manifest under the store ``home``."""
        return home / "manifests" / self.registry / self.namespace / self.name / self.tag

    def __str__(self) -> str:
        return f"{self.registry}/{self.namespace}/{self.name}:{self.tag}"


@dataclass
class OllamaModel:
    """An Ollama model whose blobs are all present and verified.

    ``digest`` is the sha256 of the manifest (``sha256:<hex>``), which is what Ollama reports as
    the model's digest; ``params`` is the params layer (stop words, temperature ...), if any.
    """

    ref: OllamaRef
    gguf_path: Path
    template: str | None
    params: dict[str, Any]
    system: str | None
    digest: str


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int

    def path(self, home: Path) -> Path:
        return home / "blobs" / self.digest.replace(":", "-", 1)


def default_ollama_home() -> Path:
    """The directory Ollama stores models in: ``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".ollama" / "models"


def resolve_local(ref: OllamaRef, home: Path) -> OllamaModel:
    """Find ``ref`` in the Ollama store at ``home`` and verify every blob it names.

    Raises :class:`ModelNotFoundError` if there is no manifest for ``ref``, and
    :class:`InvalidCheckpointError` if the manifest is malformed or a blob is missing, has the wrong
    size, or does not match its sha256 digest.
    """
    path = ref.manifest_path(home)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ModelNotFoundError(
            f"Ollama model {ref} is not in {home}: there is no manifest at {path}", param="model"
        ) from None
    except OSError as e:
        raise InvalidCheckpointError(f"cannot read the manifest {path}: {e.strerror}") from e
    blobs = parse_manifest(data, f"manifest {path}", InvalidCheckpointError)
    for blob in blobs:
        problem = check_file(blob.path(home), blob)
        if problem:
            raise InvalidCheckpointError(f"Ollama model {ref}: {blob.media_type} blob {blob.digest} {problem}")
    return model_from_manifest(ref, home, blobs, data)


def _bad_reference(text: str, reason: str) -> InvalidModelNameError:
    return InvalidModelNameError(f"invalid Ollama model reference {text!r}: {reason}", param="model")


def parse_manifest(data: bytes, source: str, error: type[Exception]) -> list[Blob]:
    """The config blob and the layers of a manifest, validated; raises ``error`` otherwise."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{source} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise error(f"{source} is not a schema 2 image manifest")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise error(f"{source} lists no layers")
    return [_parse_blob(entry, source, error) for entry in [manifest.get("config"), *layers]]


def _parse_blob(entry: Any, source: str, error: type[Exception]) -> Blob:
    if not isinstance(entry, dict):
        raise error(f"{source} has a config or layer entry that is not an object")
    media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise error(f"{source} has an invalid digest {digest!r} (expected sha256:<64 hex digits>)")
    if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
        raise error(f"{source} has an invalid mediaType or size for {digest}")
    return Blob(media_type, digest, size)


def check_file(path: Path, blob: Blob) -> str | None:
    """Why ``path`` does not hold ``blob``, or None if it does."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"is missing (expected at {path})"
    if size != blob.size:
        return f"has {size} bytes where the manifest says {blob.size}"
    actual = f"sha256:{file_sha256(path)}"
    if actual != blob.digest:
        return f"is corrupt: its digest is {actual}"
    return None


def layers_by_type(ref: OllamaRef, blobs: list[Blob]) -> dict[str, list[Blob]]:
    by_type: dict[str, list[Blob]] = {}
    for blob in blobs[1:]:  # blobs[0] is the config
        by_type.setdefault(blob.media_type, []).append(blob)
    models = len(by_type.get(MODEL_LAYER, []))
    if models != 1:
        raise InvalidCheckpointError(f"Ollama model {ref} has {models} model layers; expected one GGUF")
    if ADAPTER_LAYER in by_type:
        raise InvalidCheckpointError(f"Ollama model {ref} applies a LoRA adapter, which is not supported")
    return by_type


def model_from_manifest(ref: OllamaRef, home: Path, blobs: list[Blob], data: bytes) -> OllamaModel:
    by_type = layers_by_type(ref, blobs)
    if PROJECTOR_LAYER in by_type:
        logger.warning("%s has a vision projector; only its text model is used", ref)
    text = {
        media_type: layers[-1].path(home).read_text(encoding="utf-8", errors="replace")
        for media_type, layers in by_type.items()
        if media_type in (TEMPLATE_LAYER, PARAMS_LAYER, SYSTEM_LAYER)
    }
    try:
        params = json.loads(text.get(PARAMS_LAYER) or "{}")
    except json.JSONDecodeError as e:
        raise InvalidCheckpointError(f"the params layer of Ollama model {ref} is not valid JSON: {e}") from e
    if not isinstance(params, dict):
        raise InvalidCheckpointError(f"the params layer of Ollama model {ref} is not a JSON object")
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    gguf_path = by_type[MODEL_LAYER][0].path(home)
    return OllamaModel(ref, gguf_path, text.get(TEMPLATE_LAYER), params, text.get(SYSTEM_LAYER), digest)


def store_metadata(found: OllamaModel) -> dict[str, str]:
    """The metadata a model store keeps of an Ollama model: reference, digest, template, system, params."""
    meta = {"ollama.reference": str(found.ref), "ollama.digest": found.digest}
    if found.template:
        meta["ollama.template"] = found.template
    if found.system:
        meta["ollama.system"] = found.system
    if found.params:
        meta["ollama.params"] = json.dumps(found.params, sort_keys=True)
    return meta
