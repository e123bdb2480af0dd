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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from engine.errors import (
    DownloadError,
    InvalidCheckpointError,
    InvalidModelNameError,
    ModelNotFoundError,
)
from engine.gguf import file_sha256

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
_URL = re.compile(r"https?://\S+")
_CHUNK = 1024 * 1024
_TIMEOUT = httpx.Timeout(30.0, read=120.0)


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
class _Blob:
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
    blobs = _parse_manifest(data, f"manifest {path}", InvalidCheckpointError)
    for blob in blobs:
        problem = _check_file(blob.path(home), blob)
        if problem:
            raise InvalidCheckpointError(f"Ollama model {ref}: {blob.media_type} blob {blob.digest} {problem}")
    return _model_from_manifest(ref, home, blobs, data)


def pull(ref: OllamaRef, home: Path, base_url: str | None = None) -> OllamaModel:
    """Download ``ref`` from its registry into the Ollama store at ``home`` and return it.

    ``base_url`` defaults to ``https://<ref.registry>``. Blobs already present and valid are skipped;
    an interrupted download resumes from its ``-partial`` file. The manifest is written last, so an
    interrupted pull never looks complete. Raises :class:`ModelNotFoundError` when the registry does
    not know the model, and :class:`DownloadError` when it cannot be reached, fails, or serves a blob
    that does not match its digest. Blocking: run it in a thread from async code.
    """
    base = (base_url or f"https://{ref.registry}").rstrip("/")
    shown = _redact(base)
    repository = f"{base}/v2/{ref.namespace}/{ref.name}"
    with httpx.Client(follow_redirects=True, timeout=_TIMEOUT) as client:
        data = _fetch_manifest(client, ref, f"{repository}/manifests/{ref.tag}", shown)
        blobs = _parse_manifest(data, f"the manifest of {ref} from {shown}", DownloadError)
        _layers_by_type(ref, blobs)  # refuse unusable models before downloading gigabytes
        unique = list(dict.fromkeys(blobs))
        with tqdm(
            total=sum(blob.size for blob in unique), unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"pulling {ref.name}:{ref.tag}", file=sys.stderr, mininterval=0.5,
        ) as bar:
            for blob in unique:
                _download_blob(client, f"{repository}/blobs/{blob.digest}", blob, home, bar, shown)
    _write_atomically(ref.manifest_path(home), data)
    logger.info("pulled %s from %s into %s", ref, shown, home)
    return _model_from_manifest(ref, home, blobs, data)


def _bad_reference(text: str, reason: str) -> InvalidModelNameError:
    return InvalidModelNameError(f"invalid Ollama model reference {text!r}: {reason}", param="model")


def _parse_manifest(data: bytes, source: str, error: type[Exception]) -> list[_Blob]:
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


def _parse_blob(entry: Any, source: str, error: type[Exception]) -> _Blob:
    if not isinstance(entry, dict):
        raise error(f"{source} has a config or layer entry that is not an object")
    media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise error(f"{source} has an invalid digest {digest!r} (expected sha256:<64 hex digits>)")
    if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
        raise error(f"{source} has an invalid mediaType or size for {digest}")
    return _Blob(media_type, digest, size)


def _check_file(path: Path, blob: _Blob) -> str | None:
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


def _layers_by_type(ref: OllamaRef, blobs: list[_Blob]) -> dict[str, list[_Blob]]:
    by_type: dict[str, list[_Blob]] = {}
    for blob in blobs[1:]:  # blobs[0] is the config
        by_type.setdefault(blob.media_type, []).append(blob)
    models = len(by_type.get(MODEL_LAYER, []))
    if models != 1:
        raise InvalidCheckpointError(f"Ollama model {ref} has {models} model layers; expected one GGUF")
    if ADAPTER_LAYER in by_type:
        raise InvalidCheckpointError(f"Ollama model {ref} applies a LoRA adapter, which is not supported")
    return by_type


def _model_from_manifest(ref: OllamaRef, home: Path, blobs: list[_Blob], data: bytes) -> OllamaModel:
    by_type = _layers_by_type(ref, blobs)
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


def _fetch_manifest(client: httpx.Client, ref: OllamaRef, url: str, shown: str) -> bytes:
    try:
        response = client.get(url, headers={"Accept": MANIFEST_MEDIA_TYPE})
    except httpx.HTTPError as e:
        raise DownloadError(f"cannot reach the registry {shown}: {_describe(e)}") from None
    if response.status_code == 404:
        raise ModelNotFoundError(f"model {ref} was not found in the registry {shown}", param="model")
    _raise_for_status(response.status_code, f"the manifest of {ref} from {shown}")
    return response.content


def _download_blob(client: httpx.Client, url: str, blob: _Blob, home: Path, bar: tqdm, shown: str) -> None:
    target = blob.path(home)
    if target.exists():
        problem = _check_file(target, blob)
        if problem is None:
            bar.update(blob.size)
            return
        logger.warning("downloading blob %s again: it %s", blob.digest, problem)
        target.unlink()
    partial = target.with_name(f"{target.name}-partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > blob.size:
        partial.unlink()
        offset = 0
    bar.update(offset)
    if offset < blob.size:
        _stream_into(client, url, partial, offset, bar, f"blob {blob.digest} from {shown}")
    problem = _check_file(partial, blob)
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"blob {blob.digest} downloaded from {shown} {problem}")
    os.replace(partial, target)


def _stream_into(client: httpx.Client, url: str, partial: Path, offset: int, bar: tqdm, what: str) -> None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                partial.unlink(missing_ok=True)
                raise DownloadError(f"the registry refused to resume {what}; pull again to start over")
            _raise_for_status(response.status_code, what)
            if offset and response.status_code != 206:  # Range ignored: the whole blob follows
                bar.update(-offset)
                offset = 0
            with partial.open("ab" if offset else "wb") as f:
                for chunk in response.iter_bytes(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
    except httpx.HTTPError as e:
        raise DownloadError(f"downloading {what} failed: {_describe(e)}") from None


def _raise_for_status(status: int, what: str) -> None:
    if status not in (200, 206):
        refused = " (access refused; private models are not supported)" if status in (401, 403) else ""
        raise DownloadError(f"the registry answered HTTP {status} for {what}{refused}")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _redact(url: str) -> str:
    """The URL without credentials, query or fragment, for messages."""
    return str(httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None))


def _describe(error: httpx.HTTPError) -> str:
    # Redirect targets are often signed URLs; keep every URL out of messages.
    return f"{type(error).__name__}: {_URL.sub('<url>', str(error))}"
